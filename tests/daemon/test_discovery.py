"""Discovery, list change detection, adaptive intervals and the request budget, end to end.

The daemon runs against the simulator over real loopback HTTP; tests wait on
conditions and count requests in the simulator's log, never on time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.daemon.answerlog import AnswerLog
from tests.rig import Rig, running_rig, wait_for
from watcher.core.settings import (
    DiscoverFilter,
    DiscoverSettings,
    PollSettings,
    Rule,
    Settings,
    WatchedSession,
)
from watcher.daemon import Watcher
from watcher.poll.api import FactoryClient
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sim import API_PREFIX

MS = timedelta(milliseconds=1)
DISCOVERED_RULE = Rule(name="hello", on=("session.discovered",), notify=("ops",))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def discovering(rig: Rig, **discover: object) -> Settings:
    """The rig's settings with no hand-listed sessions and discovery on."""
    return replace(
        rig.settings,
        sessions=(),
        discover=DiscoverSettings(
            interval=200 * MS,
            labels={"source": "listed"},
            **discover,  # type: ignore[arg-type]
        ),
    )


def finished(rig: Rig) -> list[str]:
    """Texts of the Slack "finished" messages so far."""
    return [m.text for m in rig.slack.messages]


def webhooks(rig: Rig) -> list[tuple[str, str]]:
    """(type, session id) of every webhook accepted so far."""
    return [
        (r.json["type"], r.json["session"]["id"]) for r in rig.receiver.requests if r.status < 300
    ]


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait for `condition` off the event loop."""
    await anyio.to_thread.run_sync(lambda: wait_for(condition, timeout=15, what=what))


async def run_while(watcher: Watcher, drive: Callable[[], Awaitable[None]]) -> None:
    """Run the watcher until `drive` returns, then stop it."""

    async def driver() -> None:
        try:
            await drive()
        finally:
            watcher.request_stop()

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver)
            await watcher.run(handle_signals=False)


@pytest.mark.anyio
async def test_sessions_created_mid_run_are_told_and_existing_ones_stay_quiet(rig: Rig) -> None:
    """Baseline silence at first start; a session created later is notified, even one
    that ran and finished before it was first listed."""
    rig.sim.add_session("old-run", title="Old running", status="running")
    rig.sim.add_session("old-done", title="Old done", status="running")
    rig.sim.complete_run("old-done")
    watcher = Watcher(discovering(rig))

    async def drive() -> None:
        await until(
            lambda: {"old-run", "old-done"} <= watcher.store.discovered().session_ids,
            "first discovery",
        )
        await until(lambda: rig.sim.path_request_count(API_PREFIX) >= 3, "more listings")
        assert finished(rig) == []  # what existed at the first start sends nothing
        assert webhooks(rig) == []
        rig.sim.add_session("new", title="New one", status="running")
        await until(lambda: watcher.store.load_state("new") is not None, "new session read")
        rig.sim.complete_run("new")
        rig.sim.add_session("quick", title="Quick one", status="running")
        rig.sim.complete_run("quick")  # started and finished between two listings
        await until(lambda: len(finished(rig)) == 2 and len(webhooks(rig)) == 2, "both told")
        rig.sim.complete_run("old-run")  # an existing session that changes is told
        await until(lambda: len(finished(rig)) == 3 and len(webhooks(rig)) == 3, "old-run told")

    await run_while(watcher, drive)
    titles = {t.split(" stopped running")[0].removeprefix(":pause_button: ") for t in finished(rig)}
    assert titles == {"New one", "Quick one", "Old running"}
    assert sorted(webhooks(rig)) == [
        ("session.completed", "new"),
        ("session.completed", "old-run"),
        ("session.completed", "quick"),
    ]
    # Discovered sessions carry discover.labels into events and messages.
    [quick] = [r.json for r in rig.receiver.requests if r.json["session"]["id"] == "quick"]
    assert quick["session"]["labels"] == {"source": "listed"}


@pytest.mark.anyio
async def test_a_restart_rediscovers_nothing_and_misses_nothing(rig: Rig) -> None:
    """Discovered sessions are stored: a restart adds none again, and catches up changes."""
    rig.sim.add_session("a", title="A", status="running")
    rig.sim.add_session("b", title="B", status="idle")
    settings = replace(discovering(rig), rules=(*rig.settings.rules, DISCOVERED_RULE))
    first = Watcher(settings)
    try:
        report = await first.discover_once()
        assert sorted(report.added) == ["a", "b"]
        assert rig.sim.request_count("a") == 0  # full list items are the baseline
        await first.deliver_due()
    finally:
        await first.aclose()
        first.store.close()
    hellos = len(rig.slack_hook.messages)
    assert hellos == 2  # a rule asked for session.discovered

    rig.sim.complete_run("a")  # while nobody watched
    rig.sim.add_session("c", title="C", status="running")  # created and finished meanwhile
    rig.sim.complete_run("c")
    second = Watcher(settings)
    try:
        report = await second.discover_once()
        assert report.added == ("c",)  # a and b are not discovered again
        assert report.moved == ("a",)  # updatedAt moved in the list
        await second.poll_all()
        await second.deliver_due()
    finally:
        await second.aclose()
        second.store.close()
    assert len(rig.slack_hook.messages) == hellos + 1  # only c is new
    assert len(finished(rig)) == 2
    assert sorted(webhooks(rig)) == [("session.completed", "a"), ("session.completed", "c")]


@pytest.mark.anyio
async def test_unchanged_sessions_are_not_read_on_their_own(rig: Rig) -> None:
    """Listed updatedAt unchanged: no own request (until max_idle); moved: read at once."""
    for n in range(4):
        rig.sim.add_session(f"s{n}", title=f"S{n}", status="idle")
    settings = replace(
        discovering(rig),
        poll=PollSettings(interval=timedelta(seconds=1), max_idle=timedelta(hours=1)),
    )
    watcher = Watcher(settings)

    async def drive() -> None:
        await until(lambda: len(watcher.store.discovered().session_ids) == 4, "discovered")
        lists = rig.sim.path_request_count(API_PREFIX)
        await until(lambda: rig.sim.path_request_count(API_PREFIX) >= lists + 10, "listings")
        assert watcher.stats.list_skips > 0  # due polls the listing stood in for
        assert [rig.sim.request_count(f"s{n}") for n in range(4)] == [0, 0, 0, 0]
        rig.sim.start_run("s2")
        await until(lambda: rig.sim.request_count("s2") >= 1, "s2 read after it moved")
        rig.sim.complete_run("s2")
        await until(lambda: finished(rig), "s2 finished")

    await run_while(watcher, drive)
    # The full list items were the baseline; unchanged sessions were never read on their own.
    assert [rig.sim.request_count(f"s{n}") for n in (0, 1, 3)] == [0, 0, 0]


@pytest.mark.anyio
async def test_activity_snaps_a_session_to_its_fast_interval_and_back(rig: Rig) -> None:
    """A poll that sees a session running moves it in the timetable to `running`; idle, back."""
    rig.sim.add_session("s1", title="S1", status="idle")
    poll = PollSettings(
        interval=timedelta(seconds=1),
        running=100 * MS,
        idle=timedelta(milliseconds=300),
        max_idle=timedelta(milliseconds=300),  # no backoff: the test watches the snap
        jitter=0.0,
    )
    settings = replace(rig.settings, poll=poll, sessions=(WatchedSession("s1"),))
    watcher = Watcher(settings)

    def job_seconds() -> float:
        timing = watcher.scheduler.timetable.timing("s1")
        assert timing is not None
        return timing.period

    async def drive() -> None:
        await until(lambda: watcher.store.load_state("s1") is not None, "first poll")
        await until(lambda: watcher.book.interval("s1") == poll.idle, "idle interval")
        assert job_seconds() == pytest.approx(0.3)
        rig.sim.start_run("s1")
        await until(lambda: watcher.book.interval("s1") == poll.running, "running interval")
        assert job_seconds() == pytest.approx(0.1)
        seen = rig.sim.request_count("s1")
        await until(lambda: rig.sim.request_count("s1") >= seen + 5, "fast polls")
        rig.sim.complete_run("s1")
        await until(lambda: watcher.book.interval("s1") == poll.idle, "idle again")
        await until(lambda: finished(rig), "the run's end told")

    await run_while(watcher, drive)
    assert watcher.stats.reschedules >= 2


@pytest.mark.parametrize("discover", [False, True], ids=["listed-by-hand", "discovered"])
@pytest.mark.anyio
async def test_a_429_storm_slows_down_and_loses_no_transition(rig: Rig, discover: bool) -> None:
    """Dozens of 429s on polls (and list pages): the budget's rate drops, and every run
    that finished before, during or after the storm is told once."""
    ids = [f"s{n}" for n in range(4)]
    for session_id in ids:
        rig.sim.add_session(session_id, title=f"Title of {session_id}", status="running")
    base = (
        discovering(rig)
        if discover
        else replace(rig.settings, sessions=tuple(WatchedSession(s) for s in ids))
    )
    settings = replace(base, factory=replace(base.factory, max_requests_per_second=40.0))
    watcher = Watcher(settings)
    where = API_PREFIX if discover else API_PREFIX + "/"  # the list's path, or only sessions

    async def drive() -> None:
        await until(lambda: all(watcher.store.load_state(s) for s in ids), "baselines")
        rig.sim.complete_run("s0")  # just before the storm
        rig.sim.faults.add(FaultRule(Fault.HTTP_429, where, times=40))
        rig.sim.faults.add(FaultRule(Fault.HTTP_429_RETRY_AFTER, where, times=5, retry_after="1"))
        rig.sim.complete_run("s1")
        await until(lambda: len(rig.sim.faults.applied) >= 20, "the storm under way")
        rig.sim.complete_run("s2")  # during the storm
        rig.sim.start_run("s1")  # a second run begins and ends while polls fail
        rig.sim.complete_run("s1")
        await until(lambda: len(rig.sim.faults.applied) >= 45, "the storm")
        assert watcher.budget.bucket.rate < 40  # slowed down
        rig.sim.complete_run("s3")  # after it
        await until(lambda: told_completions() >= latest_completions(), "every latest run told")
        await until(lambda: {t.split()[3] for t in finished(rig)} >= set(ids), "every finish")

    def latest_completions() -> set[tuple[str, int]]:
        return {(s, rig.sim.session(s).completed_at_ms or 0) for s in ids}

    def told_completions() -> set[tuple[str, int]]:
        return {
            (r.json["session"]["id"], round(_ms(r.json["data"]["completed_at"])))
            for r in rig.receiver.requests
            if r.status < 300 and r.json["type"] == "session.completed"
        }

    await run_while(watcher, drive)
    accepted = [r.json["id"] for r in rig.receiver.requests if r.status < 300]
    assert len(accepted) == len(set(accepted))  # nothing told twice
    assert watcher.stats.failed_polls + watcher.stats.failed_lists >= 45


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


@pytest.mark.anyio
async def test_a_failing_list_drops_nothing_and_a_session_that_leaves_is_told_then_dropped(
    rig: Rig,
) -> None:
    """A failed list is a failed poll; a complete listing without a session drops it after
    one last poll, which tells its deletion."""
    rig.sim.add_session("a", title="A", status="idle")
    rig.sim.add_session("b", title="B", status="idle")
    watcher = Watcher(discovering(rig))
    try:
        await watcher.discover_once()
        rig.sim.faults.add(FaultRule(Fault.HTTP_503, API_PREFIX, times=-1, exact=True))
        report = await watcher.discover_once()
        assert report.failure is not None
        assert report.failure.status == 503
        assert watcher.store.discovered().session_ids == {"a", "b"}
        assert watcher.stats.failed_lists == 1
        assert not watcher.poll_allowed("__discovery__", watcher.clock())  # backing off
        assert (await watcher.poll("a")).failure is None  # sessions are still read
        rig.sim.faults.clear()
        rig.sim.delete("b")
        report = await watcher.discover_once()
        assert report.leaving == ("b",)
        await watcher.poll("b")  # the last poll: 404 -> session.deleted
        await watcher.deliver_due()
        assert watcher.store.discovered().session_ids == {"a"}
        assert "b" not in watcher.book.watched
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert webhooks(rig) == [("session.deleted", "b")]


@pytest.mark.anyio
async def test_bare_list_items_are_judged_by_reading_the_session(rig: Rig) -> None:
    """Items with only sessionId: the filter reads each new one once, then keeps its verdict."""
    rig.sim.add_session("r1", title="release-1", status="idle")
    rig.sim.add_session("x1", title="experiment", status="idle")
    rig.sim.set_list_ids_only(True)
    watcher = Watcher(discovering(rig, include=DiscoverFilter(titles=("release-*",))))
    try:
        report = await watcher.discover_once()
        assert report.added == ("r1",)
        assert (rig.sim.request_count("r1"), rig.sim.request_count("x1")) == (1, 1)
        await watcher.poll("r1")  # the baseline: nothing to tell
        report = await watcher.discover_once()
        assert report.added == ()
        assert (rig.sim.request_count("r1"), rig.sim.request_count("x1")) == (2, 1)
        await watcher.deliver_due()
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert webhooks(rig) == []


@pytest.mark.anyio
async def test_an_unchanged_body_lets_an_idle_session_back_off(rig: Rig) -> None:
    """An identical body skips the database but still counts as a quiet poll: the idle
    session moves in the timetable to `max_idle`."""
    rig.sim.add_session("s1", title="S1", status="idle")
    poll = PollSettings(
        interval=timedelta(seconds=1),
        idle=100 * MS,
        max_idle=timedelta(minutes=2),
        jitter=0.0,
    )
    settings = replace(rig.settings, poll=poll, sessions=(WatchedSession("s1"),))
    offset = [timedelta(0)]
    factory = settings.factory
    source = AnswerLog(FactoryClient(factory.base_url, factory.api_key, concurrency=4))
    watcher = Watcher(settings, source=source, clock=lambda: datetime.now(UTC) + offset[0])

    async def drive() -> None:
        await until(lambda: "Unchanged" in source.answers, "an unchanged answer")
        before = watcher.book.interval("s1")
        assert before is not None
        assert before < poll.max_idle  # quiet for seconds only
        offset[0] = timedelta(hours=1)  # an hour later, nothing has changed
        await until(lambda: watcher.book.interval("s1") == poll.max_idle, "backed off")
        timing = watcher.scheduler.timetable.timing("s1")
        assert timing is not None
        assert timing.period == 120.0

    await run_while(watcher, drive)
    assert source.answers[0] == "Fetched"
    assert source.answers[-1] == "Unchanged"  # the poll that backed it off
    assert watcher.store.load_state("s1") is not None


@pytest.mark.anyio
async def test_a_reload_turns_discovery_on_and_changes_the_budget(rig: Rig) -> None:
    """Discovery starts on reload; the new budget applies to the running watcher."""
    rig.sim.add_session("a", title="A", status="running")
    plain = replace(rig.settings, sessions=())
    pending = [discovering(rig)]
    pending[0] = replace(
        pending[0], factory=replace(pending[0].factory, max_requests_per_second=123.0)
    )
    watcher = Watcher(plain, reload=pending.pop)

    async def drive() -> None:
        await until(lambda: watcher.supervisor.started, "started")
        assert rig.sim.path_request_count(API_PREFIX) == 0  # no discovery yet
        assert await watcher.reload()
        assert watcher.budget.bucket.ceiling == 123.0
        await until(lambda: "a" in watcher.store.discovered().session_ids, "discovered")
        rig.sim.complete_run("a")
        await until(lambda: finished(rig), "a finished")

    await run_while(watcher, drive)


@pytest.mark.anyio
async def test_running_sessions_go_first_when_the_budget_is_short(rig: Rig) -> None:
    """With more polls due than the budget allows, the running session keeps its pace and
    the idle ones, polled later than asked, are still polled."""
    idle = [f"i{n}" for n in range(8)]
    rig.sim.add_session("run", title="Runner", status="running")
    for session_id in idle:
        rig.sim.add_session(session_id, title=session_id, status="idle")
    poll = PollSettings(
        interval=timedelta(seconds=2),
        running=200 * MS,
        idle=timedelta(seconds=2),
        jitter=0.0,
    )
    settings = replace(
        rig.settings,
        poll=poll,
        sessions=tuple(WatchedSession(s) for s in ["run", *idle]),
        factory=replace(rig.settings.factory, max_requests_per_second=5.0),
    )
    watcher = Watcher(settings)

    async def drive() -> None:
        await until(lambda: rig.sim.request_count("run") >= 20, "twenty polls of the runner")
        await until(lambda: all(rig.sim.request_count(s) >= 1 for s in idle), "idle ones too")

    await run_while(watcher, drive)
    runner = rig.sim.request_count("run")
    assert runner > 3 * max(rig.sim.request_count(s) for s in idle)
