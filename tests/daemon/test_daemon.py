"""The watcher end to end, in process, over real loopback HTTP."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from tests.daemon.answerlog import AnswerLog
from tests.daemon.parts import cycle
from tests.rig import CHANNEL, Rig, run_driven, running_rig, wait_for
from watcher.core.message import Message, SendOutcome, WebhookMessage
from watcher.core.model import Event, EventType, SessionRef, SessionState
from watcher.core.poll import Answer
from watcher.core.render import render_for
from watcher.core.rules import Route
from watcher.core.rulestate import Evaluation
from watcher.core.settings import Rule, Settings, Target, WatchedSession
from watcher.daemon import Watcher
from watcher.daemon.live import P, R
from watcher.daemon.reloader import client_for
from watcher.daemon.supervisor import STALL_AFTER
from watcher.notifiers import build_notifier
from watcher.notifiers.base import Notifier
from watcher.ops.systemd import ProgressWatchdog
from watcher.poll.api import FactoryClient, SessionSource
from watcher.store import OutboxStatus, SqliteStore
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sim import RawBody


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def webhook_types(rig: Rig) -> list[tuple[str, str]]:
    """(type, session id) of every webhook the receiver accepted."""
    return [
        (r.json["type"], r.json["session"]["id"]) for r in rig.receiver.requests if r.status < 300
    ]


@pytest.mark.anyio
async def test_transitions_reach_the_right_targets_once(rig: Rig) -> None:
    """Each routed transition is delivered once to each of its targets, nothing else is."""
    settings = rig.with_sessions("s1", "s2")
    watcher = Watcher(settings)
    try:
        await cycle(watcher)  # discovery: no rule routes it
        assert rig.slack.messages == []
        rig.sim.complete_run("s1")
        rig.sim.add_messages("s2", 3)  # no rule for messages
        await cycle(watcher)
        await cycle(watcher)  # nothing new: nothing sent again
        rig.sim.archive("s1")
        rig.sim.delete("s2")
        await cycle(watcher)
        await cycle(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert [m.channel for m in rig.slack.messages] == [CHANNEL]
    assert "stopped running" in rig.slack.messages[0].text
    assert sorted(webhook_types(rig)) == sorted(
        [("session.completed", "s1"), ("session.archived", "s1"), ("session.deleted", "s2")]
    )
    assert all(r.signature_valid for r in rig.receiver.requests)
    texts = [m.payload["text"] for m in rig.slack_hook.messages]
    assert len(texts) == 2
    assert any("archived" in t for t in texts)
    assert any("deleted" in t for t in texts)


@pytest.mark.anyio
async def test_restart_catches_up_and_sends_nothing_twice(rig: Rig) -> None:
    """Transitions while the watcher was down are found on the next start, once."""
    settings = rig.with_sessions("s1")
    first = Watcher(settings)
    await cycle(first)
    rig.sim.complete_run("s1")
    await cycle(first)
    await first.aclose()
    first.store.close()
    assert len(rig.slack.messages) == 1

    rig.sim.start_run("s1")
    rig.sim.complete_run("s1")  # a whole second run while nobody watched
    second = Watcher(settings)
    try:
        await cycle(second)
        await cycle(second)
    finally:
        await second.aclose()
        second.store.close()
    assert len(rig.slack.messages) == 1  # idle -> idle: no status change seen
    assert [t for t, _ in webhook_types(rig)] == ["session.completed", "session.completed"]


@pytest.mark.anyio
async def test_failed_polls_derive_no_transition(rig: Rig) -> None:
    """Garbage, errors and 404-looking faults never produce events."""
    settings = rig.with_sessions("s1")
    watcher = Watcher(settings)
    try:
        await cycle(watcher)
        for fault in (Fault.GARBAGE, Fault.HTTP_503, Fault.TRUNCATED_JSON, Fault.RESET):
            # aiohttp resends a GET once after a reset: two make a failed poll.
            times = 2 if fault is Fault.RESET else 1
            rig.sim.faults.add(FaultRule(fault, "/api/v0/sessions/s1", times=times))
            report = await watcher.poll("s1")
            assert report.failure is not None
            assert report.events == ()
        assert watcher.stats.failed_polls == 4
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_long_outage_is_one_event_each_way(rig: Rig) -> None:
    """An API outage past the threshold yields one unavailable and one recovered message."""
    settings = rig.with_sessions("s1", "s2")
    base = datetime.now(UTC)
    clock_offset = [0.0]
    watcher = Watcher(settings, clock=lambda: base + timedelta(seconds=clock_offset[0]))
    try:
        await cycle(watcher)
        rig.sim.faults.add(FaultRule(Fault.HTTP_503, "/api/v0/sessions/", times=-1))
        for step in range(5):
            clock_offset[0] = step * 1.0
            await cycle(watcher)
        rig.sim.faults.clear()
        clock_offset[0] = 10.0
        await cycle(watcher)
        await cycle(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    texts = [m.payload["text"] for m in rig.slack_hook.messages]
    assert len(texts) == 2
    assert "Factory API unavailable" in texts[0]
    assert "reachable again" in texts[1]


@pytest.mark.anyio
async def test_run_polls_on_schedule_and_stops_cleanly(rig: Rig) -> None:
    """`run` polls on the timetable's clock, delivers, and drains on request_stop."""
    settings = rig.with_sessions("s1")
    watcher = Watcher(settings)
    ready = anyio.Event()

    async def drive() -> None:
        await ready.wait()
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: rig.sim.request_count("s1") >= 2, what="two scheduled polls")
        )
        rig.sim.complete_run("s1")
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: rig.slack.messages and rig.receiver.requests, what="both deliveries"
            )
        )
        watcher.request_stop()

    await run_driven(watcher, drive, within=20, on_ready=ready.set)
    assert "stopped running" in rig.slack.messages[0].text
    counts = watcher.store_counts()
    assert counts[OutboxStatus.DELIVERED] == 2  # slack + completed webhook
    assert counts[OutboxStatus.PENDING] == 0


@pytest.mark.anyio
async def test_failed_polls_back_off_and_recover(rig: Rig) -> None:
    """A failing session is held back per the backoff; the API answering again clears it."""
    settings = rig.with_sessions("s1", "s2")
    now = [datetime.now(UTC)]
    watcher = Watcher(settings, clock=lambda: now[0])
    try:
        rig.sim.faults.add(FaultRule(Fault.HTTP_500, "/api/v0/sessions/s1"))
        await watcher.poll("s1")
        await watcher.poll("s2")
        assert not watcher.poll_allowed("s1", now[0])
        assert watcher.poll_allowed("s2", now[0])
        now[0] += timedelta(seconds=0.41)  # 2 x 200ms is the longest first backoff
        assert watcher.poll_allowed("s1", now[0])
        await watcher.poll("s1")
        assert watcher.poll_allowed("s1", now[0])

        # An outage longer than unavailable_after (1 s in the rig) backs off everyone...
        rig.sim.faults.add(FaultRule(Fault.HTTP_503, "/api/v0/sessions/", times=-1))
        for _ in range(4):
            now[0] += timedelta(seconds=0.5)
            await watcher.poll("s1")
        await watcher.poll("s2")
        assert not watcher.poll_allowed("s1", now[0])
        assert not watcher.poll_allowed("s2", now[0])
        rig.sim.faults.clear()
        await watcher.poll("s2")  # ...and the first good answer ends it for everyone
        assert watcher.poll_allowed("s1", now[0])
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_rate_limited_api_is_not_polled_before_retry_after(rig: Rig) -> None:
    """After a 429 with Retry-After, no session is polled until it has passed."""
    settings = rig.with_sessions("s1", "s2", "s3")
    watcher = Watcher(settings)
    limited = anyio.Event()

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: all(rig.sim.request_count(s) >= 1 for s in ("s1", "s2", "s3")),
                what="first polls",
            )
        )
        rig.sim.faults.add(
            FaultRule(Fault.HTTP_429_RETRY_AFTER, "/api/v0/sessions/s2", retry_after="2")
        )
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: any(r.status == 429 for r in rig.sim.session_requests("s2")), what="the 429"
            )
        )
        limited.set()
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: rig.sim.request_count("s2") >= 3, timeout=10, what="polls after the pause"
            )
        )
        watcher.request_stop()

    await run_driven(watcher, drive, within=20)
    records = [r for s in ("s1", "s2", "s3") for r in rig.sim.session_requests(s)]
    limited_at = next(r.at for r in rig.sim.session_requests("s2") if r.status == 429)
    # Polls already in flight when the 429 was answered may land just after it.
    too_soon = [r for r in records if limited_at + 0.3 < r.at < limited_at + 1.95]
    assert too_soon == []
    assert limited.is_set()


@pytest.mark.anyio
async def test_hostile_title_reaches_slack_inert(rig: Rig) -> None:
    """A session titled with Slack control syntax pings nobody and forges no link."""
    settings = rig.with_sessions("s1")
    rig.sim.update("s1", title="<!channel> <@U1> <https://x|y>")
    watcher = Watcher(settings)
    try:
        await cycle(watcher)
        rig.sim.complete_run("s1")
        await cycle(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    [message] = rig.slack.messages
    shown = message.text + repr(message.blocks)
    for raw in ("<!channel>", "<@U1>", "<https://x|y>"):
        assert raw not in shown
    assert "&lt;!channel&gt; &lt;@U1&gt; &lt;https://x|y&gt;" in message.text


@pytest.mark.anyio
async def test_a_slow_poll_never_stacks_up(rig: Rig) -> None:
    """While one poll of a session hangs, its scheduled ticks queue no second poll."""
    settings = rig.with_sessions("s1", "s2")
    watcher = Watcher(settings)

    async def drive() -> None:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: rig.sim.request_count("s1") >= 1))
        rig.sim.faults.add(FaultRule(Fault.STALL, "/api/v0/sessions/s1", stall_seconds=1.5))
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: rig.sim.faults.applied, what="the stalled poll")
        )
        during = rig.sim.request_count("s1"), rig.sim.request_count("s2")
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: rig.sim.request_count("s2") >= during[1] + 4)
        )
        # s2 kept its 200 ms rhythm while s1's one poll was still hanging.
        assert rig.sim.request_count("s1") == during[0]
        watcher.request_stop()

    await run_driven(watcher, drive, within=20)


@pytest.mark.anyio
async def test_reload_applies_sessions_rules_and_targets_without_losing_queued_work(
    rig: Rig,
) -> None:
    """A reload starts and stops sessions, routes by the new rules, and keeps queued rows."""
    first = rig.with_sessions("s1", "s2")
    rig.sim.add_session("s3", title="Title of s3", status="running")
    pending: list[Settings] = []
    watcher = Watcher(first, reload=pending.pop)
    to_ops = (Rule(name="to-ops", on=("session.status_changed",), notify=("ops",)),)

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: all(watcher.store.load_state(s) for s in ("s1", "s2")))
        )
        # The webhook target is down: its rows wait in the outbox...
        rig.receiver.respond_with(503, times=-1)
        rig.sim.complete_run("s1")
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: any(r.status == 503 for r in rig.receiver.requests))
        )
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: rig.slack.messages))
        # ...and the reload drops that target, drops s2, adds s3, and changes the rules.
        pending.append(
            replace(
                first,
                sessions=(first.sessions[0], WatchedSession(id="s3")),
                targets={k: v for k, v in first.targets.items() if k != "ci"},
                rules=to_ops,
            )
        )
        assert await watcher.reload()
        s2_polls = rig.sim.request_count("s2")
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store.load_state("s3") is not None, what="s3 polled")
        )
        rig.sim.complete_run("s3")  # the new session, under the new rules
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: rig.slack_hook.messages, what="the new rule's message")
        )
        assert len(rig.slack.messages) == 1  # the old rule no longer applies
        assert rig.sim.request_count("s2") <= s2_polls + 1  # one poll may have been queued
        # The ci row is kept, not lost (the ops row may still be being marked).
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store_counts()[OutboxStatus.PENDING] == 1)
        )
        [kept] = watcher.store.list_outbox(OutboxStatus.PENDING)
        assert (kept.target, kept.event.type) == ("ci", "session.completed")
        # Bring the target back with a rule change: the queued rows go out.
        rig.receiver.clear_responses()
        pending.append(first)
        assert await watcher.reload()
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: watcher.store_counts()[OutboxStatus.PENDING] == 0, what="queued rows sent"
            )
        )
        watcher.request_stop()

    await run_driven(watcher, drive, within=30)
    delivered = [r.json["type"] for r in rig.receiver.requests if r.status < 300]
    assert delivered == ["session.completed"]


class RecordingWatchdog(ProgressWatchdog):
    """A progress watchdog that remembers which components beat."""

    def __init__(self, stall_after: float) -> None:
        super().__init__(stall_after)
        self.beats: list[str] = []

    def beat(self, component: str, now: float) -> None:
        """Record the beat, then count it."""
        self.beats.append(component)
        super().beat(component, now)


@pytest.mark.anyio
async def test_a_watcher_without_targets_stays_healthy_and_can_gain_one(rig: Rig) -> None:
    """With no target the delivery side still reports progress, and a reload can add one."""
    settings = rig.with_sessions("s1")
    empty = replace(settings, targets={}, rules=())
    pending = [settings]
    watcher = Watcher(empty, reload=pending.pop)
    progress = watcher.supervisor.progress = RecordingWatchdog(STALL_AFTER)
    for component in ("scheduler", "delivery"):
        progress.register(component, time.monotonic())

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store.load_state("s1") is not None)
        )
        # No lane, yet the delivery side reports progress.
        assert "delivery" in progress.beats
        assert progress.healthy(time.monotonic())[0]
        assert await watcher.reload()
        rig.sim.complete_run("s1")
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: rig.slack.messages))
        watcher.request_stop()

    await run_driven(watcher, drive, within=20)
    assert "stopped running" in rig.slack.messages[0].text


POISON: dict[str, RawBody] = {
    "p-range": RawBody(
        b'{"sessionId": "p-range", "status": "idle", "messageCount": 1, "createdAt": 1,'
        b' "updatedAt": -166036958850935616}'
    ),
    "p-future": RawBody(
        b'{"sessionId": "p-future", "status": "idle", "messageCount": 1, "createdAt": 1,'
        b' "updatedAt": 2, "completedAt": 126144000000000000000}'
    ),
    "p-nan": RawBody(
        b'{"sessionId": "p-nan", "status": "idle", "messageCount": NaN, "createdAt": 1,'
        b' "updatedAt": 2}'
    ),
    "p-wrong": RawBody(
        b'{"sessionId": "p-wrong", "status": "idle", "messageCount": "many", "createdAt": 1,'
        b' "updatedAt": 2}'
    ),
    "p-deep": RawBody(b"[" * 200_000 + b"]" * 200_000),
    "p-array": RawBody(b"[]"),
    "p-big": RawBody(b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'),
    "p-endless": RawBody(b"x" * 65536, endless=True),
}
GOOD = ("g1", "g2", "g-surrogate")


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged with a traceback, and nothing crashed."""
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert "Traceback" not in caplog.text
    assert "crashed" not in caplog.text


@pytest.mark.anyio
async def test_poisoned_bodies_next_to_good_sessions(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Bodies no snapshot can come from are failed polls; every good notification arrives once."""
    settings = rig.with_sessions(*GOOD, *POISON)
    rig.sim.update("g-surrogate", title="\ud800 Surrogate")  # served as the JSON text "\ud800"
    for session_id, raw in POISON.items():
        rig.sim.serve_raw(session_id, raw)
    watcher = Watcher(settings)

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: all(watcher.store.load_state(s) is not None for s in GOOD),
                what="first good polls",
            )
        )
        for session_id in GOOD:
            rig.sim.complete_run(session_id)
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: len(webhook_types(rig)) >= 3 and len(rig.slack.messages) >= 3,
                what="the good sessions' notifications",
            )
        )
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: all(rig.sim.request_count(s) >= 3 for s in POISON),
                timeout=15,
                what="poisoned sessions polled again",
            )
        )
        assert watcher.supervisor.progress.healthy(time.monotonic())[0]
        watcher.request_stop()

    await run_driven(watcher, drive, within=30)
    no_tracebacks(caplog)
    assert sorted(webhook_types(rig)) == sorted(("session.completed", s) for s in GOOD)
    assert sorted(m.text.split(" stopped")[0] for m in rig.slack.messages) == sorted(
        [
            ":pause_button: Title of g1",
            ":pause_button: Title of g2",
            ":pause_button: \ufffd Surrogate",
        ]
    )
    titles = {r.json["session"]["id"]: r.json["session"]["title"] for r in rig.receiver.requests}
    assert titles["g-surrogate"] == "\ufffd Surrogate"
    assert all(watcher.store.load_state(s) is None for s in POISON)  # nothing stored from them
    assert watcher.stats.failed_polls >= 3 * len(POISON)
    assert rig.slack_hook.messages == []  # good answers in between: no API outage declared
    assert watcher.store_counts()[OutboxStatus.DELIVERED] == 6


class RaisingSource:
    """The real client, except that reading one session raises (a bug in parsing)."""

    def __init__(self, inner: SessionSource, poisoned: str) -> None:
        self.inner = inner
        self.poisoned = poisoned

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Raise for the poisoned session, fetch the others."""
        if session_id == self.poisoned:
            raise OverflowError("date value out of range")
        return await self.inner.fetch_session(session_id, known=known)

    def forget(self, session_id: str) -> None:
        """Forget what the real client keeps for the session."""
        self.inner.forget(session_id)

    async def aclose(self) -> None:
        """Close the real client."""
        await self.inner.aclose()


@pytest.mark.anyio
async def test_a_poll_that_raises_is_a_failed_poll(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while reading one session counts as its failed poll and backs it off."""
    settings = rig.with_sessions("s1", "bad")
    now = [datetime.now(UTC)]
    source = RaisingSource(client_for(settings), "bad")
    watcher = Watcher(settings, source=source, clock=lambda: now[0])
    try:
        await cycle(watcher)
        report = await watcher.poll("bad")
        assert report.failure is not None
        assert report.failure.reason == "poll error: OverflowError: date value out of range"
        assert watcher.stats.failed_polls == 2
        assert not watcher.poll_allowed("bad", now[0])
        rig.sim.complete_run("s1")
        await cycle(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert webhook_types(rig) == [("session.completed", "s1")]
    raised = [r for r in caplog.records if "poll of bad raised" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in raised] == [
        ("ERROR", True),  # the traceback once...
        ("WARNING", False),  # ...then one line per poll while it lasts
        ("WARNING", False),
    ]


def queue_damaged_rows(settings: Settings) -> None:
    """Rows a store written before the fix may hold: a lone surrogate, and an unreadable body."""
    store = SqliteStore(settings.state_path)
    try:
        events = [
            Event(
                "evt_old",
                EventType.COMPLETED,
                datetime.now(UTC),
                SessionRef("old", "T"),
                {"completed_at": datetime.now(UTC).isoformat(), "duration_s": 1.0},
            ),
            Event("evt_broken", EventType.COMPLETED, datetime.now(UTC), SessionRef("broken")),
        ]
        store.record_events(
            events, [(e, Route("completed", "ci")) for e in events], datetime.now(UTC)
        )
    finally:
        store.close()
    db = sqlite3.connect(settings.state_path)
    try:
        with db:
            db.execute(
                'UPDATE events SET body=replace(body, \'"title": "T"\', \'"title": "\\ud800 T"\')'
                " WHERE id='evt_old'"
            )
            db.execute("UPDATE events SET body='{\"id\": ' WHERE id='evt_broken'")
    finally:
        db.close()


@pytest.mark.anyio
async def test_a_restart_with_damaged_rows_queued_comes_up_and_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Old surrogate rows are delivered made safe, unreadable ones dead-lettered; new work flows."""
    settings = rig.with_sessions("s1")
    queue_damaged_rows(settings)
    watcher = Watcher(settings)

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store.load_state("s1") is not None)
        )
        rig.sim.complete_run("s1")
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: len(webhook_types(rig)) >= 2, what="old row and new event")
        )
        watcher.request_stop()

    await run_driven(watcher, drive, within=20)
    assert sorted(webhook_types(rig)) == [("session.completed", "old"), ("session.completed", "s1")]
    old = next(r.json for r in rig.receiver.requests if r.json["session"]["id"] == "old")
    assert old["session"]["title"] == "\ufffd T"
    store = SqliteStore(settings.state_path)
    try:
        (dead,) = store.list_outbox(OutboxStatus.DEAD)
        assert (dead.session_id, dead.event_type) == ("broken", "session.completed")
        assert (dead.last_error or "").startswith("stored event cannot be read: JSONDecodeError")
    finally:
        store.close()
    [logged] = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert logged.exc_info is not None


class RaisingNotifier:
    """A real notifier that raises (a bug, not a classified failure) for one session's events."""

    def __init__(self, inner: Notifier, session_id: str) -> None:
        self.inner = inner
        self.target_name = inner.target_name
        self.session_id = session_id

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Raise for the poisoned session, send the rest through the real notifier."""
        if (
            isinstance(message, WebhookMessage)
            and b'"id":"' + self.session_id.encode() in message.body
        ):
            raise KeyError("signing key")
        return await self.inner.send(message, now=now)

    async def aclose(self) -> None:
        """Close the real notifier."""
        await self.inner.aclose()


@pytest.mark.anyio
async def test_a_failure_injected_at_each_stage_stops_only_its_own_work(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising parse, notifier and renderer each cost one session's work; the rest arrives."""
    settings = rig.with_sessions("good", "notify-bug", "render-bug", "parse-bug")
    # One message per notification, through the injected renderer (cards have their own).
    slack = replace(settings.targets["team-slack"], card=False)
    settings = replace(settings, targets={**settings.targets, "team-slack": slack})
    notifiers = {name: build_notifier(t) for name, t in settings.targets.items()}
    notifiers["ci"] = RaisingNotifier(notifiers["ci"], "notify-bug")

    async def render(target: Target, event: Event, rule: str) -> Message:
        if (
            event.session is not None
            and event.session.id == "render-bug"
            and target.kind == "slack"
        ):
            raise RuntimeError("template exploded")
        return render_for(target.kind, event, rule)

    watcher = Watcher(
        settings,
        source=RaisingSource(client_for(settings), "parse-bug"),
        notifiers=notifiers,
        render=render,
    )
    ready = anyio.Event()
    sessions = ("good", "notify-bug", "render-bug")

    async def drive() -> None:
        await ready.wait()
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: all(watcher.store.load_state(s) for s in sessions))
        )
        for session_id in (*sessions, "parse-bug"):
            rig.sim.complete_run(session_id)
        # good: slack + ci; notify-bug: slack only; render-bug: ci only.
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: len(rig.slack.messages) == 2 and len(webhook_types(rig)) == 2,
                what="every notification that can arrive",
            )
        )
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store_counts()[OutboxStatus.DEAD] == 2)
        )
        assert watcher.supervisor.progress.healthy(time.monotonic())[0]
        watcher.request_stop()

    await run_driven(watcher, drive, within=20, on_ready=ready.set)
    assert sorted(m.text for m in rig.slack.messages) == sorted(
        f":pause_button: Title of {s} stopped running (running → idle)"
        for s in ("good", "notify-bug")
    )
    assert sorted(webhook_types(rig)) == [
        ("session.completed", "good"),
        ("session.completed", "render-bug"),
    ]
    store = SqliteStore(settings.state_path)
    try:
        dead = {
            (r.session_id, r.target): r.last_error for r in store.list_outbox(OutboxStatus.DEAD)
        }
    finally:
        store.close()
    assert dead == {
        ("notify-bug", "ci"): "notifier error: KeyError: 'signing key'",
        ("render-bug", "team-slack"): "cannot render: RuntimeError: template exploded",
    }
    assert watcher.stats.failed_polls >= 1
    assert "crashed" not in caplog.text

    assert "stopped running" in rig.slack.messages[0].text


class CountingStore(SqliteStore):
    """The real SQLite store, counting the reads and writes of the poll path."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loads = 0
        self.records = 0

    def load_state(self, session_id: str) -> SessionState | None:
        self.loads += 1
        return super().load_state(session_id)

    def record(
        self,
        session_id: str,
        state: SessionState,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
        *,
        evaluation: Evaluation | None = None,
    ) -> int:
        self.records += 1
        return super().record(session_id, state, events, routes, now, evaluation=evaluation)


class CountingWatcher(Watcher):
    """The real watcher, counting its hops to the database thread."""

    hops = 0

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        self.hops += 1
        return await super().db(fn, *args, **kwargs)


def counting_watcher(settings: Settings) -> tuple[CountingWatcher, CountingStore, AnswerLog]:
    """A watcher over a counting store and source, both real underneath."""
    store = CountingStore(settings.state_path)
    factory = settings.factory
    source = AnswerLog(FactoryClient(factory.base_url, factory.api_key, concurrency=4))
    return CountingWatcher(settings, source=source, store=store), store, source


@pytest.mark.anyio
async def test_identical_body_skips_parsing_diffing_and_the_database(rig: Rig) -> None:
    """An unchanged answer touches neither the store nor its thread; a changed one does."""
    settings = rig.with_sessions("s1")
    watcher, store, source = counting_watcher(settings)
    try:
        await watcher.poll("s1")  # first sight: read and stored
        assert (source.answers, store.loads, store.records) == (["Fetched"], 1, 1)
        hops = watcher.hops
        for _ in range(3):
            report = await watcher.poll("s1")
            assert report.events == ()
        assert source.answers[1:] == ["Unchanged"] * 3
        assert (store.loads, store.records, watcher.hops) == (1, 1, hops)
        assert watcher.stats.polls == 4

        rig.sim.complete_run("s1")
        report = await watcher.poll("s1")
        assert source.answers[-1] == "Fetched"
        assert {e.type for e in report.events} >= {"session.completed"}
        assert (store.loads, store.records) == (2, 2)
        await watcher.poll("s1")
        assert source.answers[-1] == "Unchanged"
        assert (store.loads, store.records) == (2, 2)
    finally:
        await watcher.aclose()
        store.close()


@pytest.mark.anyio
async def test_first_poll_after_a_restart_compares_with_the_stored_snapshot(rig: Rig) -> None:
    """A fresh process goes the full path once, so a change made while it was down is found."""
    settings = rig.with_sessions("s1", "s2")
    before, store, _ = counting_watcher(settings)
    try:
        await before.poll_all()
    finally:
        await before.aclose()
        store.close()
    rig.sim.complete_run("s1")  # while no watcher runs; s2 stays as it was

    after, store, source = counting_watcher(settings)
    try:
        reports = {r.session_id: r for r in await after.poll_all()}
        assert source.answers == ["Fetched", "Fetched"]
        assert store.loads == 2
        assert {e.type for e in reports["s1"].events} >= {"session.completed"}
        assert reports["s2"].events == ()
        assert store.records == 1  # only s1 changed
        await after.poll_all()
        assert source.answers[2:] == ["Unchanged", "Unchanged"]
        assert (store.loads, store.records) == (2, 1)
        await after.deliver_due()
    finally:
        await after.aclose()
        store.close()
    assert webhook_types(rig) == [("session.completed", "s1")]


@pytest.mark.anyio
async def test_a_failed_poll_keeps_the_known_body_and_clears_backoff(rig: Rig) -> None:
    """After a failure, an unchanged answer ends the backoff without a database call."""
    settings = rig.with_sessions("s1")
    watcher, store, source = counting_watcher(settings)
    try:
        await watcher.poll("s1")
        rig.sim.faults.add(FaultRule(Fault.HTTP_503, "/api/v0/sessions/s1"))
        failed = await watcher.poll("s1")
        assert failed.failure is not None
        assert not watcher.poll_allowed("s1", datetime.now(UTC))
        await watcher.poll("s1")
        assert source.answers[-1] == "Unchanged"
        assert watcher.poll_allowed("s1", datetime.now(UTC))
        assert (store.loads, store.records) == (1, 1)
    finally:
        await watcher.aclose()
        store.close()


@pytest.mark.anyio
async def test_after_a_404_the_same_body_is_a_change_again(rig: Rig) -> None:
    """A 404 stores Gone and forgets the body; dry runs never trust a known body."""
    settings = rig.with_sessions("s1")
    watcher, store, source = counting_watcher(settings)
    try:
        await watcher.poll("s1")
        await watcher.poll("s1", dry_run=True)
        assert source.answers[-1] == "Fetched"
        source.vanish_once = True
        report = await watcher.poll("s1")
        assert [e.type for e in report.events] == ["session.deleted"]
        report = await watcher.poll("s1")  # the old body again: back from the dead
        assert source.answers[-1] == "Fetched"
        assert [e.type for e in report.events] == ["session.discovered"]
        assert store.records == 3
    finally:
        await watcher.aclose()
        store.close()


class HeldStore(SqliteStore):
    """The real store, whose reads can be held in the database thread on demand."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.release.set()
        self.holding = threading.Event()

    def load_state(self, session_id: str) -> SessionState | None:
        if not self.release.is_set():
            self.holding.set()
            self.release.wait(10)
        return super().load_state(session_id)


@pytest.mark.anyio
async def test_delivery_does_not_wait_for_the_polls_database_thread(rig: Rig) -> None:
    """With a poll stuck in its database call, queued notifications still go out."""
    settings = rig.with_sessions("s1", "s2")
    store = HeldStore(settings.state_path)
    watcher = Watcher(settings, store=store)
    try:
        await watcher.poll_all()
        rig.sim.complete_run("s1")
        await watcher.poll("s1")  # queues session.completed for ci, finished for Slack
        rig.sim.complete_run("s2")
        store.release.clear()
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.poll, "s2")
                await anyio.to_thread.run_sync(store.holding.wait)
                delivered = await watcher.deliver_due()
                assert rig.receiver.requests  # sent while the poll's thread was held
                store.release.set()
        assert delivered == 2
        assert webhook_types(rig) == [("session.completed", "s1")]
        assert len(rig.slack.messages) == 1
    finally:
        store.release.set()
        await watcher.aclose()
        store.close()


@pytest.mark.anyio
async def test_the_scheduler_beat_vouches_for_the_timetable(rig: Rig) -> None:
    """The heartbeat job beats for the scheduler only while the poll timetable turns."""
    watcher = Watcher(rig.with_sessions("s1"))
    progress = watcher.supervisor.progress = RecordingWatchdog(STALL_AFTER)
    progress.register("scheduler", time.monotonic())
    try:
        watcher.supervisor.heartbeat()
        assert progress.beats == ["scheduler"]  # fresh: the timetable just started
        stalled = watcher.scheduler.last_cycle + STALL_AFTER + 1  # it stopped turning
        watcher.supervisor.heartbeat(stalled)
        assert progress.beats == ["scheduler"]
    finally:
        await watcher.aclose()
        watcher.store.close()
