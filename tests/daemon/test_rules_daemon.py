"""The rule language through the daemon: simulator, real sockets, a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.daemon.parts import StepClock, clocked_rig
from tests.rig import Rig, wait_for
from watcher.core.model import Snapshot, TokenUsage
from watcher.core.settings import QuietHours, Rule, Settings, WatchedSession
from watcher.daemon import Watcher

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 13:00 in Berlin


@pytest.fixture
def clock() -> StepClock:
    """A clock at START."""
    return StepClock(START)


@pytest.fixture
def rig(tmp_path: Path, clock: StepClock) -> Iterator[Rig]:
    """The loopback rig whose simulator reads the test's clock."""
    with clocked_rig(tmp_path, clock) as running:
        yield running


def configure(rig: Rig, *rules: Rule, **extra: Any) -> Settings:
    """Settings watching s1 (running in the simulator) with only `rules`."""
    rig.sim.add_session("s1", title="release-42", status="running", model="claude-x")
    return replace(
        rig.settings,
        sessions=(WatchedSession(id="s1", name="nightly"),),
        rules=rules,
        **extra,
    )


async def step(
    watcher: Watcher, clock: StepClock, seconds: float = 0, *, poll: bool = True
) -> None:
    """Move time, poll (unless told not to), run the rule timer, and deliver what is due."""
    clock.advance(seconds)
    if poll:
        await watcher.poll_all()
    await watcher.tick_rules()
    await watcher.deliver_due()


def received(rig: Rig) -> list[tuple[str, bool]]:
    """(type, resolved) of every webhook the `ci` receiver accepted, in order."""
    return [
        (r.json["type"], bool(r.json["data"].get("resolved")))
        for r in rig.receiver.requests
        if r.status < 300
    ]


def ci(name: str, on: str, **options: Any) -> Rule:
    """A rule sending `on` to the signed webhook target `ci`."""
    return Rule(name=name, on=(on,), notify=("ci",), **options)


@pytest.mark.anyio
async def test_flapping_under_settle_gives_exactly_one_finished(rig: Rig, clock: StepClock) -> None:
    """running <-> idle every few seconds under settle 20s: nothing, then one session.finished."""
    settings = configure(rig, ci("done", "session.finished", settle=timedelta(seconds=20)))
    watcher = Watcher(settings, clock=clock.utc)
    try:
        await step(watcher, clock)
        for _ in range(6):
            rig.sim.complete_run("s1")
            await step(watcher, clock, 4)
            rig.sim.start_run("s1")
            await step(watcher, clock, 4)
            await step(watcher, clock, 4, poll=False)
        assert received(rig) == []
        rig.sim.complete_run("s1")
        await step(watcher, clock, 4)
        await step(watcher, clock, 19)
        assert received(rig) == []
        for _ in range(5):
            await step(watcher, clock, 2)
        await step(watcher, clock, 60)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [("session.finished", False)]


@pytest.mark.anyio
async def test_interrupt_is_interrupted_never_finished(rig: Rig, clock: StepClock) -> None:
    """An interrupt settles into session.interrupted after 30 s; session.finished stays silent."""
    settings = configure(rig, ci("done", "session.finished"), ci("stopped", "session.interrupted"))
    watcher = Watcher(settings, clock=clock.utc)
    try:
        await step(watcher, clock)
        rig.sim.interrupt("s1")
        await step(watcher, clock, 5)
        await step(watcher, clock, 29, poll=False)
        assert received(rig) == []
        await step(watcher, clock, 1, poll=False)
        await step(watcher, clock, 60)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [("session.interrupted", False)]


@pytest.mark.anyio
async def test_a_run_between_two_polls_is_finished(rig: Rig, clock: StepClock) -> None:
    """A run that starts and completes between two polls is still one session.finished."""
    settings = configure(rig, ci("done", "session.finished"))
    watcher = Watcher(settings, clock=clock.utc)
    try:
        rig.sim.complete_run("s1")
        await step(watcher, clock)  # baseline: idle, completed
        clock.advance(10)
        rig.sim.start_run("s1")
        clock.advance(10)
        rig.sim.complete_run("s1")
        await step(watcher, clock, 10)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [("session.finished", False)]
    assert rig.receiver.requests[0].json["data"]["between_polls"] is True


@pytest.mark.anyio
async def test_stuck_reminds_once_and_resolves_when_it_moves(rig: Rig, clock: StepClock) -> None:
    """No progress for 15m: one stuck; one reminder after repeat 30m; one resolved on progress."""
    rule = ci(
        "stuck",
        "session.stuck",
        hold_for=timedelta(minutes=15),
        repeat=timedelta(minutes=30),
        resolved=True,
    )
    watcher = Watcher(configure(rig, rule), clock=clock.utc)
    try:
        await step(watcher, clock)
        for _ in range(14):
            await step(watcher, clock, 60)
        assert received(rig) == []
        await step(watcher, clock, 60, poll=False)  # the timer, not a poll, sees it
        assert received(rig) == [("session.stuck", False)]
        for _ in range(29):
            await step(watcher, clock, 60)
        assert len(received(rig)) == 1
        await step(watcher, clock, 60)
        rig.sim.add_messages("s1", 2)
        await step(watcher, clock, 60)
        await step(watcher, clock, 60)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [
        ("session.stuck", False),
        ("session.stuck", False),
        ("session.stuck", True),
    ]
    bodies = [r.json for r in rig.receiver.requests]
    assert bodies[1]["data"]["reminder"] == 1


@pytest.mark.anyio
async def test_a_credit_threshold_fires_once(rig: Rig, clock: StepClock) -> None:
    """Crossing 100 credits notifies once, however many polls follow."""
    rule = ci("spend", "session.usage_crossed", threshold={"factory_credits": 100.0})
    settings = configure(rig, rule)
    rig.sim.update("s1", token_usage=TokenUsage(factory_credits=90.0))
    watcher = Watcher(settings, clock=clock.utc)
    try:
        await step(watcher, clock)
        for credits in (99.0, 100.5, 130.0, 180.0):
            rig.sim.update("s1", token_usage=TokenUsage(factory_credits=credits))
            await step(watcher, clock, 10)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [("session.usage_crossed", False)]
    assert rig.receiver.requests[0].json["data"]["value"] == 100.5


@pytest.mark.anyio
async def test_quiet_hours_digest_arrives_when_the_window_ends(rig: Rig, clock: StepClock) -> None:
    """Notifications due at night are held and arrive as one digest per target at 07:00."""
    night = QuietHours("night", time(22), time(7), "Europe/Berlin")
    rules = (
        Rule("done", ("session.finished",), ("team-slack", "ci"), quiet_hours="night"),
        Rule("start", ("session.started",), ("team-slack",), quiet_hours="night"),
    )
    settings = configure(rig, *rules, quiet_hours={"night": night})
    watcher = Watcher(settings, clock=clock.utc)
    try:
        await step(watcher, clock)
        rig.sim.complete_run("s1")
        await step(watcher, clock, 9 * 3600 + 60)  # 22:01 Berlin
        rig.sim.start_run("s1")
        await step(watcher, clock, 600)
        rig.sim.complete_run("s1")
        await step(watcher, clock, 600)
        assert rig.slack.messages == []
        assert received(rig) == []
        await step(watcher, clock, 8 * 3600, poll=False)  # 06:21 in Berlin: still quiet
        assert rig.slack.messages == []
        await step(watcher, clock, 40 * 60, poll=False)  # 07:01
        await step(watcher, clock, 60, poll=False)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert len(rig.slack.messages) == 1
    lines = rig.slack.messages[0].text.splitlines()
    assert lines[0] == ":zzz: Quiet hours night are over: 3 notification(s) held"
    assert lines[1] == "*nightly* (3)"  # grouped by session
    sections = [b["text"]["text"] for b in rig.slack.messages[0].blocks if b["type"] == "section"]
    # Linked like the session in every other message.
    assert sections[1].splitlines()[0] == "*<https://app.factory.ai/sessions/s1|nightly>* (3)"
    assert [line.split(" UTC ")[1] for line in lines[2:]] == [
        ":checkered_flag: nightly finished",
        ":arrow_forward: nightly started running",
        ":checkered_flag: nightly finished",
    ]
    assert received(rig) == [("digest", False)]
    listed = rig.receiver.requests[0].json["events"]
    assert [e["type"] for e in listed] == ["session.finished", "session.finished"]
    assert listed[0]["sequence"] < listed[1]["sequence"]


@pytest.mark.anyio
async def test_the_rule_timer_fires_stuck_without_any_poll(rig: Rig, clock: StepClock) -> None:
    """With hour-long polls, the rule timer still fires stuck on time."""
    rule = ci("stuck", "session.stuck", hold_for=timedelta(minutes=15))
    settings = configure(rig, rule)
    settings = replace(settings, poll=replace(settings.poll, interval=timedelta(hours=1)))
    watcher = Watcher(settings, clock=clock.utc)
    await watcher.poll_all()  # the baseline the timer works from
    polls = rig.sim.request_count("s1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run(handle_signals=False))
        clock.advance(16 * 60)
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: received(rig), what="stuck via the timer")
        )
        watcher.request_stop()
    assert received(rig) == [("session.stuck", False)]
    assert rig.sim.request_count("s1") <= polls + 1


@pytest.mark.anyio
async def test_waiting_fires_after_for_and_resolves(rig: Rig, clock: StepClock) -> None:
    """A session pending for 5 minutes is waiting; one resolved when it runs again."""
    rule = ci("waiting", "session.waiting", hold_for=timedelta(minutes=5), resolved=True)
    watcher = Watcher(configure(rig, rule), clock=clock.utc)
    try:
        await step(watcher, clock)
        rig.sim.update("s1", status="pending")
        await step(watcher, clock, 30)
        await step(watcher, clock, 4 * 60 + 29, poll=False)
        assert received(rig) == []
        await step(watcher, clock, 1, poll=False)
        await step(watcher, clock, 60)
        rig.sim.start_run("s1")
        await step(watcher, clock, 60)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert received(rig) == [("session.waiting", False), ("session.waiting", True)]


@pytest.mark.anyio
async def test_when_title_tags_and_model_pick_the_sessions(rig: Rig, clock: StepClock) -> None:
    """Only the session whose title, tags and model all match is notified; the snapshot keeps
    the settings rules read (model, interaction mode, autonomy level, active time)."""
    rule = ci(
        "done",
        "session.finished",
        title_globs=("release-*",),
        tags=("nightly",),
        model_globs=("claude-*",),
    )
    settings = configure(rig, rule)
    rig.sim.update(
        "s1",
        tags=["nightly", "infra"],
        interaction_mode="spec",
        autonomy_level="high",
        assistant_active_ms=1234,
    )
    rig.sim.add_session("s2", title="release-43", status="running", model="gpt-x", tags=["nightly"])
    settings = replace(settings, sessions=(*settings.sessions, WatchedSession(id="s2")))
    watcher = Watcher(settings, clock=clock.utc)
    try:
        await step(watcher, clock)
        rig.sim.complete_run("s1")
        rig.sim.complete_run("s2")
        await step(watcher, clock, 10)
        stored = watcher.store.load_state("s1")
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert [(r.json["type"], r.json["session"]["id"]) for r in rig.receiver.requests] == [
        ("session.finished", "s1")
    ]
    assert isinstance(stored, Snapshot)
    assert (stored.model, stored.interaction_mode, stored.autonomy_level) == (
        "claude-x",
        "spec",
        "high",
    )
    assert stored.assistant_active_ms == 1234
    assert stored.tags == ("nightly", "infra")


@pytest.mark.anyio
@pytest.mark.parametrize("leaving", ["restart", "reload"])
async def test_time_based_rules_stop_when_the_session_is_no_longer_watched(
    rig: Rig, clock: StepClock, leaving: str
) -> None:
    """Stuck, waiting, long_running and repeat never fire for a session no longer watched
    (the config lost it across a restart, or a reload removed it while running)."""
    rules = (
        ci("stuck", "session.stuck", hold_for=timedelta(minutes=15), repeat=timedelta(minutes=5)),
        ci("waiting", "session.waiting", hold_for=timedelta(minutes=15)),
        ci("long", "session.long_running", hold_for=timedelta(minutes=15)),
    )
    settings = configure(rig, *rules)
    without = replace(settings, sessions=())
    watcher = Watcher(settings, clock=clock.utc, reload=[without].pop)
    await step(watcher, clock)  # the baseline: s1 running, its rules due in 15 minutes
    assert watcher.store.next_wake() is not None
    if leaving == "restart":
        await watcher.aclose()
        watcher.store.close()
        watcher = Watcher(without, clock=clock.utc)
    reports = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run(handle_signals=False))
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: watcher.scheduler.running))
        if leaving == "reload":
            assert await watcher.reload()
        for _ in range(3):
            clock.advance(20 * 60)
            reports.append(await watcher.tick_rules())
        watcher.request_stop()
    try:
        assert [r.routes for r in reports] == [(), (), ()]
        assert watcher.store.due_sessions(clock.utc()) == []  # not found due again each tick
        assert sum(watcher.store_counts().values()) == 0  # nothing queued either
    finally:
        watcher.store.close()
    assert received(rig) == []
