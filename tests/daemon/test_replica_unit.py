"""The replica's lifecycle on FakeLease (in memory): standby answers, taking the lead,
losing it, a fenced write ending the term, the send gate, resigning on stop, a lease
answer that cannot be read.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.rig import Rig, running_rig
from watcher.core.lease import LeaseTimes, Trust
from watcher.core.secret import Secret
from watcher.core.settings import HaSettings, Settings
from watcher.daemon.replica import Replica, Role, RoleNotifier
from watcher.ops.endpoint import Request
from watcher.store.errors import FencedError
from watcher.store.postgres.fakelease import FakeLease, FakeLeaseTable
from watcher.store.postgres.lease import Acquisition
from watcher.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

HA = HaSettings(
    lease_ttl=timedelta(seconds=4),
    renew_every=timedelta(milliseconds=200),
    margin=timedelta(seconds=1),
)
TTL = HA.lease_ttl.total_seconds()
DEADLINE = 20.0


class FencedSqlite(SqliteStore):
    """A SQLite store fenced like the PostgreSQL one, against a FakeLeaseTable:
    housekeeping writes only while its epoch holds the fake lease."""

    def __init__(self, path: Path, table: FakeLeaseTable) -> None:
        super().__init__(path)
        self.table = table
        self.epoch: int | None = None
        self.refused = 0
        self.requeued_for: list[int] = []

    @property
    def fenced_writes(self) -> int:
        """Writes refused so far."""
        return self.refused

    def set_epoch(self, epoch: int | None) -> None:
        """Write under `epoch`."""
        self.epoch = epoch

    def requeue_claimed(self, epoch: int) -> int:
        """Nothing is ever claimed in SQLite; note the call."""
        self.requeued_for.append(epoch)
        return 0

    def record_housekeeping(self, *args: Any, **kwargs: Any) -> None:
        """The fence, then the write."""
        row = self.table.row
        if row is None or row.epoch != self.epoch or row.expires_at <= self.table.clock():
            self.refused += 1
            raise FencedError(self.epoch)
        super().record_housekeeping(*args, **kwargs)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def settings_for(rig: Rig) -> Settings:
    """HA settings (the URL is never used: the lease and store are fakes)."""
    return replace(rig.with_sessions("s1"), state_url=Secret("postgresql://x@h/db"), ha=HA)


def make(settings: Settings, table: FakeLeaseTable, name: str, tmp: Path) -> Replica:
    """A replica on the fake lease table, its store a fenced SQLite file of its own."""
    stores: list[FencedSqlite] = []

    def open_store() -> FencedSqlite:
        stores.append(FencedSqlite(tmp / f"{name}-{len(stores)}.db", table))
        return stores[-1]

    replica = Replica(
        settings,
        lease=FakeLease(table, name, TTL),
        open_store=open_store,
        systemd=RoleNotifier(None),
    )
    replica.stores = stores  # type: ignore[attr-defined]
    return replica


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait until `condition()` holds, or fail after `DEADLINE` seconds."""
    with anyio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - sampling another task's doings
            await anyio.sleep(0.01)
    assert condition(), what


@asynccontextmanager
async def running(*replicas: Replica) -> AsyncIterator[None]:
    """Run `replicas` until the block ends, then stop them."""
    async with anyio.create_task_group() as tg:
        for r in replicas:
            tg.start_soon(lambda r=r: r.run(handle_signals=False))
        yield
        for r in replicas:
            r.request_stop()
        await until(lambda: all(r.role is Role.STANDBY for r in replicas), "all stopped")
        tg.cancel_scope.cancel()


def changes(r: Replica, reason: str) -> float:
    """`factory_watcher_leadership_changes{reason}` of `r`."""
    value = r.metrics.registry.get_sample_value(
        "factory_watcher_leadership_changes_total", {"reason": reason}
    )
    return value or 0.0


def answer(r: Replica, path: str) -> tuple[int, str]:
    """Status and body of `path` on the replica's routes."""
    response = r.routes()[path](Request("GET", path, None))
    return response.status, response.body.decode()


async def test_a_standby_answers_health_with_its_role_and_the_leader(
    rig: Rig, tmp_path: Path
) -> None:
    """Another holder leads: the replica stands by, /healthz and /readyz say 200 and
    name the leader; with the database out of reach /readyz says 503 and why."""
    table = FakeLeaseTable()
    other = FakeLease(table, "other:9:ffff", TTL)
    assert (await other.acquire()).epoch == 1
    r = make(settings_for(rig), table, "me:1:aaaa", tmp_path)
    async with running(r):
        await until(lambda: r.seen is not None, "the leader seen")
        assert answer(r, "/healthz")[0] == 200
        status, body = answer(r, "/readyz")
        assert status == 200
        assert body.startswith("standby")
        assert "leader other:9:ffff, epoch 1" in body
        assert r.metrics.registry.get_sample_value("factory_watcher_leader") == 0
        r.lease.unreachable = True  # type: ignore[attr-defined]
        await until(lambda: r.problem is not None, "the failure noted")
        status, body = answer(r, "/readyz")
        assert status == 503
        assert "lease unknown" in body
        assert answer(r, "/healthz")[0] == 200
        await other.renew(1)  # the other keeps leading throughout
    assert len(r.stores) == 1  # type: ignore[attr-defined]  (opened once at start, to migrate)


async def test_the_lead_is_taken_when_free_and_lost_when_taken_over(
    rig: Rig, tmp_path: Path
) -> None:
    """An expired lease is taken (epoch set on the store, claims requeued); when another
    holder takes the lease over, the leader's next renewal finds it lost (or its next
    write is fenced, whichever comes first) and it stands by."""
    table = FakeLeaseTable()
    r = make(settings_for(rig), table, "me:1:aaaa", tmp_path)
    async with running(r):
        await until(r.leading, "leading")
        await until(lambda: r.watcher is not None, "the term's watcher built")
        term_store = r.stores[-1]  # type: ignore[attr-defined]
        assert (term_store.epoch, term_store.requeued_for) == (1, [1])
        assert r.describe() == "leader (epoch 1, holder me:1:aaaa)"
        assert r.metrics.registry.get_sample_value("factory_watcher_leader") == 1
        assert answer(r, "/readyz")[1].startswith("leader (epoch 1")
        table.expire()
        thief = FakeLease(table, "thief:2:bbbb", TTL)
        assert (await thief.acquire()).epoch == 2
        await until(lambda: changes(r, "lost") + changes(r, "fenced") == 1, "stepped down")
        assert not r.leading()
        assert r.role is Role.STANDBY
        await thief.renew(2)
    assert table.row is not None
    assert table.row.holder == "thief:2:bbbb"


async def test_a_fenced_write_ends_the_term_at_once(rig: Rig, tmp_path: Path) -> None:
    """The lease moves on while the leader cannot renew (its connection is out): its next
    write is refused by the fence, counted, and the term ends (fenced)."""
    table = FakeLeaseTable()
    r = make(settings_for(rig), table, "me:1:aaaa", tmp_path)
    async with running(r):
        await until(lambda: r.watcher is not None, "leading")
        watcher = r.watcher
        assert watcher is not None
        r.lease.unreachable = True  # type: ignore[attr-defined]
        table.expire()
        assert (await FakeLease(table, "next:3:cccc", TTL).acquire()).epoch == 2
        with pytest.raises(FencedError):
            await watcher.db(watcher.store.record_housekeeping, [], {"k": "v"}, None)
        await until(lambda: changes(r, "fenced") == 1, "stepped down: fenced")
        fenced = r.metrics.registry.get_sample_value("factory_watcher_fenced_writes_total")
        # Ours, and any housekeeping write of the term that met the fence as well.
        assert fenced is not None
        assert fenced >= 1
        assert fenced == r.stores[-1].refused  # type: ignore[attr-defined]
        assert not r.leading()
        r.lease.unreachable = False  # type: ignore[attr-defined]


async def test_a_stop_resigns_the_lease(rig: Rig, tmp_path: Path) -> None:
    """A leader asked to stop drains, resigns (the lease expires now) and counts it."""
    table = FakeLeaseTable()
    r = make(settings_for(rig), table, "me:1:aaaa", tmp_path)
    async with running(r):
        await until(lambda: r.watcher is not None, "leading")
    assert changes(r, "resigned") == 1
    assert "resign" in r.lease.calls  # type: ignore[attr-defined]
    assert table.row is not None
    assert table.row.expires_at <= table.clock()


async def test_the_send_gate_waits_for_a_renewal_when_the_window_is_short(
    rig: Rig, tmp_path: Path
) -> None:
    """No send starts with less than the send timeout of trust left; a renewal lets it go."""
    clock = [100.0]
    r = Replica(
        settings_for(rig),
        lease=FakeLease(FakeLeaseTable(), "me:1:aaaa", TTL),
        open_store=lambda: FencedSqlite(tmp_path / "x.db", FakeLeaseTable()),
        systemd=RoleNotifier(None),
        clock=lambda: clock[0],
    )
    assert r.send_timeout == 2.0  # min(10 s, ttl/2)
    times = LeaseTimes.of(HA.lease_ttl, HA.renew_every, HA.margin)
    r.trust = Trust(1, 99.5, times)  # 2.5 s of trust left: a send may start
    with anyio.fail_after(1):
        await r._gate()
    r.trust = Trust(1, 98.0, times)  # 1 s left: it waits
    passed: list[bool] = []

    async def send() -> None:
        await r._gate()
        passed.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await anyio.wait_all_tasks_blocked()  # the send is parked at the gate, or passed it
        assert passed == []
        r.trust = Trust(1, 100.0, times)  # renewed
        r._renewed.set()
    assert passed == [True]


def test_systemd_status_says_role_holder_and_epoch_and_ready_goes_once(
    rig: Rig, tmp_path: Path
) -> None:
    """STATUS= starts with the replica's role, holder and epoch (the leader's watcher
    line after it); READY=1 is sent once per process, not once per term."""
    with (
        tempfile.TemporaryDirectory(prefix="sdn") as tmp,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        path = str(Path(tmp) / "notify")
        sock.bind(path)
        sock.setblocking(False)
        notifier = RoleNotifier(path)
        r = Replica(
            settings_for(rig),
            lease=FakeLease(FakeLeaseTable(), "me:1:aaaa", TTL),
            open_store=lambda: FencedSqlite(tmp_path / "x.db", FakeLeaseTable()),
            systemd=notifier,
        )
        assert notifier.status("")
        assert sock.recv(4096) == b"STATUS=standby (holder me:1:aaaa; no leader)"
        r.role = Role.LEADER
        r.trust = Trust(7, 0.0, LeaseTimes.of(HA.lease_ttl, HA.renew_every, HA.margin))
        assert notifier.status("watching 1 session(s)")
        assert sock.recv(4096) == (
            b"STATUS=leader (epoch 7, holder me:1:aaaa); watching 1 session(s)"
        )
        assert notifier.ready()
        assert sock.recv(4096) == b"READY=1"
        assert not notifier.ready()
        with pytest.raises(BlockingIOError):
            sock.recv(4096)


async def test_a_watcher_on_sqlite_leads_alone_without_a_lease(rig: Rig) -> None:
    """One watcher on SQLite has no lease, no gate and reports itself the leader."""
    from watcher.daemon import Watcher

    watcher = Watcher(rig.settings)
    try:
        assert watcher.settings.state_url is None
        assert watcher.metrics.registry.get_sample_value("factory_watcher_leader") == 1
        assert watcher.delivery._gate is None
    finally:
        await watcher.aclose()
        watcher.store.close()


class GarbledLease(FakeLease):
    """A FakeLease whose answers cannot be decoded while `garbled` is set."""

    garbled = True

    async def acquire(self) -> Acquisition:
        """Raise as a lease row with a NULL column would, while garbled."""
        if self.garbled:
            raise TypeError("int() argument must be a string or a number, not 'NoneType'")
        return await super().acquire()

    async def resign(self, epoch: int) -> bool:
        """Raise while garbled (the lease then expires on its own)."""
        if self.garbled:
            raise ValueError("garbled resign answer")
        return await super().resign(epoch)


async def test_a_lease_answer_that_cannot_be_read_is_a_failed_try_not_an_exit(
    rig: Rig, tmp_path: Path
) -> None:
    """An acquire or resign that raises (an undecodable lease row) is noted as the
    standby's problem and the replica carries on: it leads once the answers read again,
    and a resign that raises still ends the run cleanly."""
    table = FakeLeaseTable()
    r = make(settings_for(rig), table, "me:1:aaaa", tmp_path)
    lease = GarbledLease(table, "me:1:aaaa", TTL)
    r.lease = lease
    async with running(r):
        await until(lambda: r.problem is not None, "the failure noted")
        assert r.problem is not None
        assert "unreadable lease answer: TypeError" in r.problem
        assert answer(r, "/readyz")[0] == 503
        lease.garbled = False
        await until(lambda: r.watcher is not None, "leading once the answers read")
        lease.garbled = True
    assert changes(r, "resigned") == 1
    assert r.role is Role.STANDBY
