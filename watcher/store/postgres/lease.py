"""The leader lease on PostgreSQL: its SQL, and `PgLease` on a dedicated connection.

The lease is one row of `leader_lease` (created by the PostgreSQL schema's
first migration), taken only when it has expired, on the database's clock
(`now()`), each time with the next epoch. The leader renews it; a renewal
that finds no row of its epoch and holder means it was lost. Resigning
expires it at once and NOTIFYs `factory_watcher_lease`, which standbys
LISTEN on so one takes over at once instead of at its next try.

`PgLease` keeps its own connection (not one of the store's pool): autocommit,
libpq keepalives and `tcp_user_timeout` so a dead peer is noticed in seconds,
and a client-side deadline on every call, so a database that stops answering
(a paused proxy, a half-open connection) is a failed call, not a hang. A
failed call closes the connection and reports the failure as a value; the
next call connects afresh. Nothing here raises out to the daemon.

`FakeLease` is the same surface in memory (with an injectable clock) for the
daemon's unit tests; `Lease` is the protocol both implement.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio
import psycopg
from psycopg.rows import TupleRow

from watcher.core.lease import Renewal

log = logging.getLogger("watcher.store.lease")

CHANNEL = "factory_watcher_lease"
APPLICATION_NAME = "factory-watcher-lease"

ACQUIRE = """
INSERT INTO leader_lease VALUES ('leader', %(holder)s, 1, now(), now(), now() + %(ttl)s)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = leader_lease.epoch + 1,
    acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at
WHERE leader_lease.expires_at <= now() RETURNING epoch
"""
RENEW = """
UPDATE leader_lease SET renewed_at = now(), expires_at = now() + %(ttl)s
WHERE name = 'leader' AND epoch = %(epoch)s AND holder = %(holder)s AND expires_at > now()
RETURNING expires_at
"""
RESIGN = """
UPDATE leader_lease SET expires_at = now()
WHERE name = 'leader' AND epoch = %(epoch)s AND holder = %(holder)s AND expires_at > now()
RETURNING epoch
"""
CURRENT = """
SELECT holder, epoch, acquired_at, expires_at, extract(epoch FROM expires_at - now())
FROM leader_lease WHERE name = 'leader'
"""
NOTIFY = f"NOTIFY {CHANNEL}"
LISTEN = f"LISTEN {CHANNEL}"


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The lease as the database has it; `expires_in` on its clock (negative: expired)."""

    holder: str
    epoch: int
    acquired_at: datetime
    expires_at: datetime
    expires_in: float


@dataclass(frozen=True, slots=True)
class Acquisition:
    """One try to take the lease: our new `epoch`, or None with the row that holds it
    (`held_by`, None when unknown) or the `failure` that stopped the try.
    """

    epoch: int | None
    held_by: LeaseRow | None = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class RenewResult:
    """One renewal: renewed, lost, or failed with a reason (no secret in it)."""

    outcome: Renewal
    failure: str | None = None


class Lease(Protocol):
    """The leader lease one replica holds or waits for."""

    holder: str

    async def acquire(self) -> Acquisition:
        """Take the lease if it has expired or was never taken."""
        ...

    async def renew(self, epoch: int) -> RenewResult:
        """Extend our lease of `epoch` by the ttl from now (the database's)."""
        ...

    async def resign(self, epoch: int) -> bool:
        """Give up our lease of `epoch` at once and wake the standbys; True if it was ours."""
        ...

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a lease change; True when woken by one."""
        ...

    async def aclose(self) -> None:
        """Close the connection; a later call opens a new one."""
        ...


def application_name(holder: str) -> str:
    """The lease connection's `application_name`: which replica's it is (an operator
    can find and end it in `pg_stat_activity`)."""
    return f"{APPLICATION_NAME} {holder}"[:63]


def failure_reason(error: BaseException) -> str:
    """A one-line reason for a failed lease call, without the connection string.

    psycopg's messages name the host and port, never the password; the type
    comes first so a bare timeout still says what happened.
    """
    if isinstance(error, TimeoutError):
        return "the database did not answer in time"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:200] if text else type(error).__name__


class PgLease:
    """The lease on a dedicated PostgreSQL connection (see the module docstring).

    `url` is the full libpq URL (password included): it is only handed to
    libpq, never logged or shown. `call_timeout` bounds every call, connection
    included; keepalives and `tcp_user_timeout` are set from it.
    """

    def __init__(self, url: str, holder: str, ttl: timedelta, *, call_timeout: float = 2.0) -> None:
        self._url = url
        self.holder = holder
        self._ttl = ttl
        self._timeout = call_timeout
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self.connects = 0  # connections opened (a reconnect counts)

    def __repr__(self) -> str:
        return f"PgLease(holder={self.holder!r})"

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        self._conn = None
        seconds = max(1, math.ceil(self._timeout))
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=max(2, seconds),  # libpq's minimum is 2
            application_name=application_name(self.holder),
            keepalives=1,
            keepalives_idle=seconds,
            keepalives_interval=1,
            keepalives_count=3,
            tcp_user_timeout=int(self._timeout * 1000),
        )
        try:
            # It ends a statement (one waiting behind a lock) just before the client
            # stops waiting, so the answer is a clean error on a connection kept open.
            await conn.execute(f"SET statement_timeout = {int(self._timeout * 800)}")
            await conn.execute(LISTEN)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self.connects += 1
        return conn

    async def _drop(self) -> None:
        """Forget the connection after a failure; the next call opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                try:
                    await conn.close()
                except Exception:  # it is broken already; closing is best effort
                    log.debug("closing the lease connection failed", exc_info=True)

    async def _one(self, query: str, params: dict[str, object]) -> TupleRow | None:
        """Run `query` within the call deadline; its first row (None: no row)."""
        with anyio.fail_after(self._timeout):
            conn = await self._connection()
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

    async def acquire(self) -> Acquisition:
        """Take the lease if it has expired or was never taken (epoch + 1)."""
        try:
            row = await self._one(ACQUIRE, {"holder": self.holder, "ttl": self._ttl})
            if row is not None:
                return Acquisition(int(row[0]))
            return Acquisition(None, await self._current())
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._drop()
            return Acquisition(None, failure=failure_reason(error))

    async def renew(self, epoch: int) -> RenewResult:
        """Extend our lease of `epoch`; no row back means another epoch holds it (lost);
        an established session that the server ended is broken; no answer is a failure.
        """
        established = self._conn is not None and not self._conn.closed
        try:
            row = await self._one(RENEW, {"holder": self.holder, "ttl": self._ttl, "epoch": epoch})
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._drop()
            # The server ended a session that was up (pg_terminate_backend, a reset):
            # not a slow answer to wait out, but an end of this replica's lead.
            broken = established and isinstance(error, psycopg.OperationalError)
            return RenewResult(Renewal.BROKEN if broken else Renewal.FAILED, failure_reason(error))
        return RenewResult(Renewal.RENEWED if row is not None else Renewal.LOST)

    async def resign(self, epoch: int) -> bool:
        """Expire our lease of `epoch` now and NOTIFY the standbys; True if it was ours."""
        try:
            row = await self._one(RESIGN, {"holder": self.holder, "epoch": epoch})
            with anyio.fail_after(self._timeout):
                conn = await self._connection()
                await conn.execute(NOTIFY)
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._drop()
            log.warning("could not resign the lease: %s", failure_reason(error))
            return False
        return row is not None

    async def current(self) -> LeaseRow | None:
        """The lease row as the database has it (None: never taken, or unreachable)."""
        try:
            return await self._current()
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._drop()
            log.debug("could not read the lease: %s", failure_reason(error))
            return None

    async def _current(self) -> LeaseRow | None:
        row = await self._one(CURRENT, {})
        if row is None:
            return None
        holder, epoch, acquired_at, expires_at, expires_in = row
        return LeaseRow(str(holder), int(epoch), acquired_at, expires_at, float(expires_in))

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for a NOTIFY on the lease channel (a notification
        that came while we were busy counts at once); False on timeout or failure.
        """
        try:
            with anyio.fail_after(seconds + self._timeout):
                conn = await self._connection()
                async for _ in conn.notifies(timeout=seconds, stop_after=1):
                    return True
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._drop()
            log.debug("lease wait failed: %s", failure_reason(error))
        return False

    async def aclose(self) -> None:
        """Close the connection (a later call would open a new one)."""
        await self._drop()
