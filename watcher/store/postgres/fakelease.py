"""`FakeLease`: the `Lease` surface in memory, for the daemon's unit tests.

Replicas in one test share a `FakeLeaseTable` (the row and its clock, which
the test injects); each replica has a `FakeLease` on it. The SQL's rules are
kept: take only an expired lease, epoch + 1; renew only our own unexpired
epoch; resign expires it at once and wakes every waiter. A lease marked
`unreachable` fails every call, as a lost connection does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import anyio

from watcher.core.lease import Renewal
from watcher.store.postgres.lease import Acquisition, LeaseRow, RenewResult

UNREACHABLE = "OperationalError: connection to the database lost (fake)"


@dataclass(frozen=True, slots=True)
class _Row:
    holder: str
    epoch: int
    acquired_at: float
    expires_at: float


class FakeLeaseTable:
    """The shared lease row, on `clock` (seconds; default the monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.row: _Row | None = None
        self._changed = anyio.Event()

    def current(self) -> LeaseRow | None:
        """The row as a `LeaseRow` (wall times are made up from the clock)."""
        row = self.row
        if row is None:
            return None
        base = datetime(2026, 1, 1, tzinfo=UTC)
        return LeaseRow(
            row.holder,
            row.epoch,
            base + timedelta(seconds=row.acquired_at),
            base + timedelta(seconds=row.expires_at),
            row.expires_at - self.clock(),
        )

    def expire(self) -> None:
        """Expire the lease now (as if its holder had stopped renewing long ago)."""
        if self.row is not None:
            self.row = replace(self.row, expires_at=self.clock())
        self.notify()

    def notify(self) -> None:
        """Wake every waiter (NOTIFY)."""
        self._changed.set()
        self._changed = anyio.Event()

    async def changed(self, seconds: float) -> bool:
        """Wait up to `seconds` for a notification."""
        with anyio.move_on_after(seconds):
            await self._changed.wait()
            return True
        return False


class FakeLease:
    """One replica's lease on a `FakeLeaseTable` (see the module docstring)."""

    def __init__(self, table: FakeLeaseTable, holder: str, ttl: float) -> None:
        self.table = table
        self.holder = holder
        self.ttl = ttl
        self.unreachable = False
        self.calls: list[str] = []

    async def acquire(self) -> Acquisition:
        """Take the lease if it has expired or was never taken."""
        self.calls.append("acquire")
        await anyio.lowlevel.checkpoint()
        if self.unreachable:
            return Acquisition(None, failure=UNREACHABLE)
        table = self.table
        now = table.clock()
        row = table.row
        if row is not None and row.expires_at > now:
            return Acquisition(None, table.current())
        epoch = 1 if row is None else row.epoch + 1
        table.row = _Row(self.holder, epoch, now, now + self.ttl)
        return Acquisition(epoch)

    async def renew(self, epoch: int) -> RenewResult:
        """Extend our lease of `epoch` by the ttl."""
        self.calls.append("renew")
        await anyio.lowlevel.checkpoint()
        if self.unreachable:
            return RenewResult(Renewal.FAILED, UNREACHABLE)
        table = self.table
        now = table.clock()
        row = table.row
        if row is None or (row.epoch, row.holder) != (epoch, self.holder) or row.expires_at <= now:
            return RenewResult(Renewal.LOST)
        table.row = replace(row, expires_at=now + self.ttl)
        return RenewResult(Renewal.RENEWED)

    async def resign(self, epoch: int) -> bool:
        """Expire our lease of `epoch` now and wake the waiters."""
        self.calls.append("resign")
        await anyio.lowlevel.checkpoint()
        if self.unreachable:
            return False
        row = self.table.row
        ours = row is not None and (row.epoch, row.holder) == (epoch, self.holder)
        if ours:
            self.table.expire()
        return ours

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a lease change."""
        if self.unreachable:
            await anyio.sleep(seconds)
            return False
        return await self.table.changed(seconds)

    async def aclose(self) -> None:
        """Nothing to close."""
        self.calls.append("close")
