"""Memory that does not grow with churn: a session that leaves, however it leaves, leaves
nothing behind in any part of the daemon.

The daemon runs against the simulator over real loopback HTTP while sessions come
and go in rounds; after each round every per-session structure is back to the
watched set (and, with discovery, the sessions the latest listing still shows).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tests.rig import Rig, running_rig, wait_for
from watcher.core.poll import Answer
from watcher.core.settings import (
    DiscoverFilter,
    DiscoverSettings,
    PollSettings,
    Settings,
    WatchedSession,
)
from watcher.daemon import Watcher
from watcher.poll.api import FactoryClient
from watcher.poll.backoff import DISCOVERY

MS = timedelta(milliseconds=1)
KEPT = ("keep-0", "keep-1")  # watched throughout
ROUNDS = 3
PER_ROUND = 8


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


class KeepingClient(FactoryClient):
    """The real client, noting which sessions it was asked about and not told to forget."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.kept: set[str] = set()

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Read, and note the session."""
        self.kept.add(session_id)
        return await super().fetch_session(session_id, known=known)

    def forget(self, session_id: str) -> None:
        """Forget, and note it."""
        self.kept.discard(session_id)
        super().forget(session_id)


def client_of(settings: Settings) -> KeepingClient:
    """A keeping client for `settings`' API."""
    factory = settings.factory
    return KeepingClient(factory.base_url, factory.api_key, timeout=2.0, concurrency=4)


@dataclass(frozen=True)
class Way:
    """One way a session leaves: how it is watched, and what makes it leave."""

    discovered: bool
    bare_list: bool = False  # the list carries ids only: the filter reads sessions on their own

    def settings(self, rig: Rig, watched: tuple[str, ...]) -> Settings:
        """Settings watching `watched` (by the config, or by discovery with a title filter)."""
        poll = PollSettings(interval=200 * MS, jitter=0.1)
        if not self.discovered:
            sessions = tuple(WatchedSession(s) for s in watched)
            return replace(rig.settings, poll=poll, sessions=sessions)
        discover = DiscoverSettings(interval=100 * MS, include=DiscoverFilter(titles=("keep*",)))
        return replace(rig.settings, poll=poll, sessions=(), discover=discover)


async def leave_deleted(rig: Rig, watcher: Watcher, ids: list[str], kept: Settings) -> None:
    """The sessions are deleted: they leave the list and answer 404."""
    for session_id in ids:
        rig.sim.delete(session_id)


async def leave_aged_out(rig: Rig, watcher: Watcher, ids: list[str], kept: Settings) -> None:
    """The sessions no longer match the filter (they stay listed)."""
    for session_id in ids:
        rig.sim.update(session_id, title=f"archived {session_id}")


async def leave_by_reload(rig: Rig, watcher: Watcher, ids: list[str], kept: Settings) -> None:
    """A reload removes the sessions from the config."""
    pending.append(kept)
    assert await watcher.reload()


pending: list[Settings] = []  # what the next reload reads (one test runs at a time)

Leave = Callable[[Rig, Watcher, list[str], Settings], Awaitable[None]]
WAYS: list[tuple[str, Way, Leave]] = [
    ("deleted", Way(discovered=True), leave_deleted),
    ("aged out of discovery", Way(discovered=True), leave_aged_out),
    ("aged out, ids-only list", Way(discovered=True, bare_list=True), leave_aged_out),
    ("removed by a reload", Way(discovered=False), leave_by_reload),
]


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait for `condition` off the event loop."""
    await anyio.to_thread.run_sync(lambda: wait_for(condition, timeout=20, what=what))


async def settle(condition: Callable[[], object], seconds: float) -> None:
    """Wait up to `seconds` for `condition` off the event loop; the caller checks it."""

    def wait() -> None:
        try:
            wait_for(condition, timeout=seconds)
        except AssertionError:
            return

    await anyio.to_thread.run_sync(wait)


def leftovers(watcher: Watcher, client: KeepingClient) -> dict[str, object]:
    """Every per-session structure that holds more than the watched sessions."""
    watched = set(watcher.book.watched)
    book = watcher.book
    scheduler = watcher.scheduler
    found: dict[str, object] = {
        "entries": set(book.entries) - watched,
        "client": client.kept - watched,
        "failures": set(book.backoff.failures) - watched - {DISCOVERY},
        "pauses": set(book.backoff.paused_until) - watched - {DISCOVERY},
        "in flight": scheduler.in_flight - watched,
        "timetable": len(scheduler.timetable) - len(watched),
    }
    return {k: v for k, v in found.items() if v}


@pytest.mark.anyio
@pytest.mark.parametrize(("way", "leave"), [w[1:] for w in WAYS], ids=[w[0] for w in WAYS])
async def test_sessions_that_leave_leave_nothing_behind(rig: Rig, way: Way, leave: Leave) -> None:
    """Rounds of sessions that come and go (with discovery, others listed that the filter
    never takes, then deleted): every structure returns to the watched set."""
    rig.sim.set_list_ids_only(way.bare_list)
    for session_id in KEPT:
        rig.sim.add_session(session_id, title=f"keep {session_id}", status="running")
    kept = way.settings(rig, KEPT)
    client = client_of(kept)
    watcher = Watcher(kept, source=client, reload=pending.pop)
    rounds: list[dict[str, object]] = []

    async def one_round(n: int) -> dict[str, object]:
        ids = [f"keep-r{n}-{i}" for i in range(PER_ROUND)]
        others = [f"other-r{n}-{i}" for i in range(PER_ROUND)] if way.discovered else []
        for session_id in [*ids, *others]:
            title = session_id.replace("-", " ", 1)  # "keep r0-1" or "other r0-1"
            rig.sim.add_session(session_id, title=title, status="running")
        if not way.discovered:
            pending.append(way.settings(rig, (*KEPT, *ids)))
            assert await watcher.reload()
        await until(lambda: set(ids) <= set(watcher.book.watched), "the round watched")
        await until(lambda: all(watcher.store.load_state(s) for s in ids), "the round read")
        await until(lambda: set(others) <= set(watcher.book.entries), "the others judged")
        await leave(rig, watcher, ids, kept)
        await until(lambda: set(watcher.book.watched) == set(KEPT), "the round gone")
        if way.discovered:
            await until(lambda: watcher.store.discovered().session_ids == set(KEPT), "forgotten")
            for session_id in [*ids, *others]:
                if not rig.sim.session(session_id).deleted:
                    rig.sim.delete(session_id)  # the organisation cleans up
        await settle(lambda: not leftovers(watcher, client), seconds=5)
        return leftovers(watcher, client)

    async def drive() -> None:
        await until(lambda: set(watcher.book.watched) == set(KEPT), "the kept sessions")
        for n in range(ROUNDS):
            rounds.append(await one_round(n))

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:

            async def driver() -> None:
                try:
                    await drive()
                finally:
                    watcher.request_stop()

            tg.start_soon(driver)
            await watcher.run(handle_signals=False)
    watcher.store.close()
    assert rounds == [{}] * ROUNDS
    assert set(watcher.book.watched) == set(KEPT)
