"""Replicas on the real PostgreSQL server, in one process: one leads at a time, a
terminated or cut lease session makes the leader step down and a standby take over,
an outage shorter than the lease changes nothing, a stop hands over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.leasedb import terminate
from tests.rig import Rig, completed, running_rig
from tests.tcpproxy import TcpProxy
from watcher.core.secret import Secret
from watcher.core.settings import HaSettings, Settings
from watcher.daemon.replica import Replica, RoleNotifier
from watcher.store.open import open_leader_store
from watcher.store.postgres.lease import PgLease, application_name

pytestmark = [pytest.mark.postgres, pytest.mark.anyio, pytest.mark.slow]

# Short leases keep the tests quick: trust lasts 3 s after a renewal, sends 2 s.
HA = HaSettings(
    lease_ttl=timedelta(seconds=4),
    renew_every=timedelta(milliseconds=500),
    margin=timedelta(seconds=1),
)
DEADLINE = 20.0  # seconds any awaited condition may take on a busy machine


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def ha_settings(rig: Rig, url: str) -> Settings:
    """The rig's settings with two watched sessions, on PostgreSQL at `url`."""
    return replace(rig.with_sessions("s1", "s2"), state_url=Secret(url), ha=HA)


async def polled_twice_more(rig: Rig, session: str) -> None:
    """Wait until `session` was polled twice more: once answered and recorded by the
    leader now, so a transition from here on is a change against a stored state."""
    seen = rig.sim.request_count(session)
    await until(lambda: rig.sim.request_count(session) >= seen + 2, f"{session} polled")


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait until `condition()` holds, or fail after `DEADLINE` seconds."""
    with anyio.fail_after(DEADLINE):
        # Sampling, not an event: the conditions are other processes' and threads' doings.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.02)
    assert condition(), what


@dataclass
class Cluster:
    """Replicas running in one task group, and a watch on who leads."""

    replicas: list[Replica]
    both_leading: int = 0  # samples in which more than one replica led
    leaders: list[str] = field(default_factory=list)  # holders in the order they led

    def leader(self) -> Replica | None:
        """The one replica that leads now, if exactly one does."""
        leading = [r for r in self.replicas if r.leading()]
        return leading[0] if len(leading) == 1 else None

    async def first_leader(self) -> Replica:
        """Wait until exactly one replica leads; that one."""
        await until(self.leader, "a leader")
        first = self.leader()
        assert first is not None
        return first

    async def watch(self) -> None:
        """Sample every few milliseconds: never two leaders at once."""
        while True:
            leading = [r.holder for r in self.replicas if r.leading()]
            if len(leading) > 1:
                self.both_leading += 1
            if len(leading) == 1 and (not self.leaders or self.leaders[-1] != leading[0]):
                self.leaders.append(leading[0])
            await anyio.sleep(0.005)


def replica(settings: Settings, name: str, url: str | None = None) -> Replica:
    """A replica named `name` whose lease and store go to `url` (default: the settings')."""
    assert settings.state_url is not None
    if url is not None:
        settings = replace(settings, state_url=Secret(url))
    assert settings.state_url is not None
    lease = PgLease(settings.state_url.reveal(), name, HA.lease_ttl, call_timeout=1.0)
    return Replica(
        settings,
        lease=lease,
        open_store=partial(open_leader_store, settings),
        systemd=RoleNotifier(None),
    )


@asynccontextmanager
async def cluster(*replicas: Replica) -> AsyncIterator[Cluster]:
    """Run `replicas` until the block ends, then stop them all."""
    running = Cluster(list(replicas))
    async with anyio.create_task_group() as tg:
        for r in replicas:
            tg.start_soon(partial(r.run, handle_signals=False))
        tg.start_soon(running.watch)
        yield running
        for r in replicas:
            r.request_stop()
        await until(lambda: all(r.role == "standby" for r in replicas), "every leader resigned")
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()


def changes(r: Replica, reason: str) -> float:
    """The replica's `factory_watcher_leadership_changes{reason}`."""
    value = r.metrics.registry.get_sample_value(
        "factory_watcher_leadership_changes_total", {"reason": reason}
    )
    return value or 0.0


async def test_two_replicas_one_leads_and_a_stop_hands_over(rig: Rig, pg_url: str) -> None:
    """One of two replicas leads and delivers; stopped, it resigns and the other leads
    and delivers the next transition; each notification arrives once, and the two
    never lead at once."""
    settings = ha_settings(rig, pg_url)
    a, b = replica(settings, "host-a:1:aaaa"), replica(settings, "host-b:2:bbbb")
    async with cluster(a, b) as running:
        first = await running.first_leader()
        await polled_twice_more(rig, "s1")
        rig.sim.complete_run("s1")
        await until(lambda: completed(rig, "s1") == 1, "s1 delivered")
        first.request_stop()
        await until(lambda: running.leader() not in (None, first), "the other leads")
        second = running.leader()
        assert second is not None
        await polled_twice_more(rig, "s2")
        rig.sim.complete_run("s2")
        await until(lambda: completed(rig, "s2") == 1, "s2 delivered")
        assert changes(first, "resigned") == 1
        assert "standby" in a.describe() + b.describe()
    assert running.both_leading == 0
    assert running.leaders == [first.holder, second.holder]
    assert (completed(rig, "s1"), completed(rig, "s2")) == (1, 1)
    assert first.metrics.registry.get_sample_value("factory_watcher_lease_epoch") == 1
    assert second.metrics.registry.get_sample_value("factory_watcher_lease_epoch") == 2


async def test_a_leader_whose_lease_session_is_terminated_steps_down(rig: Rig, pg_url: str) -> None:
    """pg_terminate_backend on the leader's lease connection: it steps down (connection)
    and the standby takes over with the next epoch; deliveries go on."""
    settings = ha_settings(rig, pg_url)
    a, b = replica(settings, "host-a:1:aaaa"), replica(settings, "host-b:2:bbbb")
    async with cluster(a, b) as running:
        first = await running.first_leader()
        assert terminate(pg_url, application_name(first.holder)) == 1
        await until(lambda: changes(first, "connection") == 1, "the leader stepped down")
        await until(lambda: running.leader() not in (None, first), "the standby leads")
        await polled_twice_more(rig, "s1")
        rig.sim.complete_run("s1")
        await until(lambda: completed(rig, "s1") == 1, "s1 delivered")
    assert running.both_leading == 0
    assert running.leaders[:2] == [first.holder, (b if first is a else a).holder]


async def test_cutting_the_leaders_connections_hands_over(rig: Rig, pg_url: str) -> None:
    """Every connection of the leader reset at the TCP level (a proxy cut): the leader
    steps down and the replica on a direct path takes over."""
    settings = ha_settings(rig, pg_url)
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        a = replica(settings, "host-a:1:aaaa", proxy.url_for(pg_url))
        async with cluster(a) as running:
            await until(running.leader, "a leads")
            b = replica(settings, "host-b:2:bbbb")
            running.replicas.append(b)
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(b.run, handle_signals=False))
                await until(lambda: b.seen is not None, "b stands by")
                assert proxy.cut() >= 1
                await until(lambda: running.leader() is b, "b leads")
                await polled_twice_more(rig, "s1")
                rig.sim.complete_run("s1")
                await until(lambda: completed(rig, "s1") == 1, "s1 delivered")
                b.request_stop()
        assert changes(a, "connection") == 1
    assert running.both_leading == 0


async def test_an_outage_shorter_than_the_lease_changes_nothing(rig: Rig, pg_url: str) -> None:
    """The database path stops answering for a second (a paused proxy), with a
    transition pending: the same leader carries on with the same epoch, nobody steps
    down, and the transition is delivered once."""
    settings = ha_settings(rig, pg_url)
    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        a = replica(settings, "host-a:1:aaaa", proxy.url_for(pg_url))
        b = replica(settings, "host-b:2:bbbb", proxy.url_for(pg_url))
        async with cluster(a, b) as running:
            first = await running.first_leader()
            await polled_twice_more(rig, "s1")
            proxy.pause()
            rig.sim.complete_run("s1")
            await anyio.sleep(1.0)  # the outage itself, shorter than the 3 s trust window
            proxy.resume()
            await until(lambda: completed(rig, "s1") == 1, "s1 delivered")
            assert running.leader() is first
        for r in (a, b):
            for reason in ("expired", "connection", "lost", "fenced"):
                assert changes(r, reason) == 0, (r.holder, reason)
    assert running.leaders == [first.holder]
    assert running.both_leading == 0
    assert completed(rig, "s1") == 1
