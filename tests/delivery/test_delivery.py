"""The outbox worker: retries, dead letters, pacing, ordering and isolation of targets."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from tests.core.factories import event, ref
from tests.rig import CHANNEL, Rig, run_driven, running_rig, wait_for
from watcher.core.message import (
    FailureKind,
    Message,
    SendFailed,
    SendOutcome,
    Sent,
    WebhookMessage,
)
from watcher.core.model import Event
from watcher.core.rules import Route
from watcher.core.secret import Secret
from watcher.core.settings import (
    DeliveryLimits,
    Rule,
    SlackTarget,
    SlackWebhookTarget,
    Target,
    WebhookTarget,
)
from watcher.daemon import Watcher
from watcher.delivery import (
    DeliveryWorker,
    Pacer,
    Render,
    pacing_key,
    render_builtin,
    sends_together,
)
from watcher.store import OutboxRow, OutboxStatus, SqliteStore, UnreadableRow

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


@dataclass
class ScriptedNotifier:
    """A notifier that answers from a script (then Sent) and records what it was given."""

    target_name: str
    script: list[SendOutcome | Exception] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Answer the next scripted outcome."""
        self.sent.append(message)
        if self.script:
            outcome = self.script.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return Sent("ok")

    async def aclose(self) -> None:
        """Nothing to release."""


def target(name: str = "hook", **limits: object) -> WebhookTarget:
    """A webhook target with delivery limits."""
    return WebhookTarget(
        name=name, url="https://example.invalid/hook", limits=DeliveryLimits(**limits)
    )  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A throwaway store, in a file that another connection can damage."""
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


def queue(store: SqliteStore, *names: str, targets: tuple[str, ...] = ("hook",)) -> None:
    """Queue one event per name (each its own session) for `targets`."""
    events = [event(id=n, session=ref(id=n)) for n in names]
    store.record_events(events, [(e, Route("r", t)) for e in events for t in targets], T0)


async def attempt_all(
    worker: DeliveryWorker,
    store: SqliteStore,
    tgt: WebhookTarget,
    notifier: ScriptedNotifier,
    now: datetime,
) -> None:
    """One attempt for every row due at `now`."""
    for row in store.due(tgt.name, now, 100):
        await worker.attempt(tgt, notifier, row)


@pytest.mark.anyio
async def test_retryable_failures_are_retried_then_delivered(store: SqliteStore) -> None:
    """A retryable failure reschedules the row; a later attempt delivers it."""
    now = [T0]
    worker = DeliveryWorker(store, clock=lambda: now[0], jitter=lambda: 0.5)
    notifier = ScriptedNotifier("hook", [SendFailed(FailureKind.RETRYABLE, "HTTP 503")])
    queue(store, "e1")
    await attempt_all(worker, store, target(), notifier, now[0])
    assert store.due("hook", now[0], 10) == []
    row = store.list_outbox()[0]
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.PENDING, 1, "HTTP 503")
    assert row.next_attempt_at == T0 + timedelta(seconds=1)
    now[0] += timedelta(seconds=1)
    await attempt_all(worker, store, target(), notifier, now[0])
    assert store.list_outbox()[0].status is OutboxStatus.DELIVERED
    assert len(notifier.sent) == 2
    assert notifier.sent[0] == notifier.sent[1]  # the same message, the same webhook-id
    assert (worker.stats.delivered, worker.stats.retried) == (1, 1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("script", "limits", "error"),
    [
        ([SendFailed(FailureKind.PERMANENT, "invalid_auth")], {}, "permanent failure"),
        (
            [SendFailed(FailureKind.RETRYABLE, "HTTP 500")],
            {"max_attempts": 1},
            "gave up after 1 attempts",
        ),
        (
            [SendFailed(FailureKind.RETRYABLE, "HTTP 500", timedelta(hours=2))],
            {"max_age": timedelta(hours=1)},
            "older than max_age",
        ),
    ],
)
async def test_dead_letters(
    store: SqliteStore,
    script: list[SendOutcome],
    limits: dict[str, object],
    error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Permanent failures and exhausted limits become dead letters, logged once at error."""
    worker = DeliveryWorker(store, clock=lambda: T0, jitter=lambda: 0.5)
    queue(store, "e1")
    await attempt_all(worker, store, target(**limits), ScriptedNotifier("hook", script), T0)
    dead = store.list_outbox(OutboxStatus.DEAD)
    assert len(dead) == 1
    assert error in (dead[0].last_error or "")
    assert worker.stats.dead == 1
    assert [r.levelname for r in caplog.records if "dead letter" in r.message] == ["ERROR"]


class BuggyNotifier(ScriptedNotifier):
    """Sends like ScriptedNotifier, but raises (a bug, not a classified failure) for one event."""

    def __init__(self, target_name: str, poisoned: str) -> None:
        super().__init__(target_name)
        self.poisoned = poisoned

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Raise for the poisoned event, send everything else."""
        if isinstance(message, WebhookMessage) and message.id == self.poisoned:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return await super().send(message, now=now)


def render_raising_for(poisoned: str) -> Render:
    """The real renderer, except that it raises for one event."""

    async def render(target: Target, e: Event, rule: str) -> Message:
        if e.id == poisoned:
            raise ValueError("cannot render this one\nsecond line")
        return await render_builtin(target, e, rule)

    return render


def damage_stored_event(store: SqliteStore, event_id: str) -> None:
    """Make a stored event undecodable, as a row from an older or broken writer could be."""
    with closing(sqlite3.connect(store.path)) as other, other:
        other.execute("UPDATE events SET body='{\"id\": 1' WHERE id=?", (event_id,))


async def serve_until(worker: DeliveryWorker, notifier: ScriptedNotifier, sent: int) -> None:
    """Run the worker's real lanes until `notifier` has sent `sent` messages, then stop."""

    async def stop_when_done() -> None:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(notifier.sent) >= sent))
        worker.stop()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_done)
            await worker.run({"hook": target()}, {"hook": notifier})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stage", "reason"),
    [
        ("notifier", "notifier error: UnicodeEncodeError: 'utf-8' codec can't encode"),
        ("render", "cannot render: ValueError: cannot render this one second line"),
        ("load", "stored event cannot be read: JSONDecodeError"),
    ],
)
async def test_a_row_our_bug_cannot_send_is_a_dead_letter_and_the_lane_goes_on(
    store: SqliteStore, stage: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug while loading, rendering or sending one row dead-letters it once; the rest go out."""
    queue(store, "e1", "e2", "e3")
    notifier: ScriptedNotifier = ScriptedNotifier("hook")
    render: Render = render_builtin
    if stage == "notifier":
        notifier = BuggyNotifier("hook", "e2")
    elif stage == "render":
        render = render_raising_for("e2")
    else:
        damage_stored_event(store, "e2")
    worker = DeliveryWorker(store, jitter=lambda: 0.0, render=render)
    await serve_until(worker, notifier, 2)
    assert [m.id for m in notifier.sent if isinstance(m, WebhookMessage)] == ["e1", "e3"]
    statuses = {r.id: r.status for r in store.list_outbox()}
    assert statuses == {1: OutboxStatus.DELIVERED, 2: OutboxStatus.DEAD, 3: OutboxStatus.DELIVERED}
    (dead,) = store.list_outbox(OutboxStatus.DEAD)
    assert (dead.last_error or "").startswith(reason)
    assert "\n" not in (dead.last_error or "")
    logged = [r for r in caplog.records if "dead letter" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelname == "ERROR"
    assert logged[0].exc_info is not None  # the traceback, once
    assert (worker.stats.delivered, worker.stats.dead) == (2, 1)


class FlakyStore:
    """A store whose `due` fails once, as a locked or full disk might."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failures = 1

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]:
        """Raise the first time, then answer."""
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.inner.due(target, now, limit)


@pytest.mark.anyio
async def test_a_store_error_pauses_the_lane_instead_of_ending_it(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error outside any one row is logged, and the lane carries on."""
    queue(store, "e1")
    notifier = ScriptedNotifier("hook")
    worker = DeliveryWorker(FlakyStore(store), jitter=lambda: 0.0)  # type: ignore[arg-type]
    await serve_until(worker, notifier, 1)
    assert store.counts()[OutboxStatus.DELIVERED] == 1
    assert any("unexpected error; going on" in r.getMessage() for r in caplog.records)


class SteppedClock:
    """Monotonic time that moves only when the code under test sleeps or a send takes time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Sleep instantly, moving the clock."""
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.anyio
async def test_pacer_spaces_sends_per_key() -> None:
    """A send starts a gap after the previous one of its key ended; other keys do not wait."""
    clock = SteppedClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    async with pacer.turn("first", 0.05):
        assert clock.slept == [pytest.approx(0.05)]  # a new process waits one gap first
    starts = []
    for _ in range(3):
        async with pacer.turn("a", 0.2):
            starts.append(clock.now)
            clock.now += 0.5  # a slow send: the next one is spaced from its end
    assert [later - earlier for earlier, later in itertools.pairwise(starts)] == [
        pytest.approx(0.7),
        pytest.approx(0.7),
    ]
    before_b = clock.now
    async with pacer.turn("b", 0.05):
        assert clock.now - before_b == pytest.approx(0.05)  # not queued behind a's next slot
    async with pacer.turn("c", 0):
        assert clock.now - before_b == pytest.approx(0.05)  # no gap, no wait


def test_pacing_keys() -> None:
    """Two Slack targets on one channel share a key; webhooks pace by target."""
    from watcher.core.secret import Secret
    from watcher.core.settings import SlackTarget

    one = SlackTarget(name="a", token=Secret("x"), channel="C1")
    assert pacing_key(one) == pacing_key(replace(one, name="b"))
    assert pacing_key(one) != pacing_key(replace(one, channel="C2"))
    assert pacing_key(target("x")) != pacing_key(target("y"))


@pytest.mark.anyio
async def test_one_failing_target_never_delays_another(store: SqliteStore) -> None:
    """A target stuck behind a long Retry-After leaves the other target's lane running."""
    stuck = ScriptedNotifier(
        "stuck", [SendFailed(FailureKind.RETRYABLE, "ratelimited", timedelta(minutes=5))]
    )
    healthy = ScriptedNotifier("healthy")
    queue(store, "e1", "e2", "e3", targets=("stuck", "healthy"))
    worker = DeliveryWorker(store, jitter=lambda: 0.5)
    targets = {"stuck": target("stuck"), "healthy": target("healthy")}

    async def stop_when_done() -> None:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(healthy.sent) == 3))
        worker.stop()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_done)
            await worker.run(targets, {"stuck": stuck, "healthy": healthy})
    assert len(stuck.sent) == 1  # the lane paused for the whole Retry-After
    assert store.counts()[OutboxStatus.DELIVERED] == 3


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Loopback rig whose fake Slack enforces 20 ms between posts per channel."""
    with running_rig(tmp_path, slack_interval=0.02) as running:
        yield running


BURST = [f"s{i:03d}" for i in range(100)]


async def deliver_burst(rig: Rig, *, card: bool) -> None:
    """100 sessions stop and start again (200 transitions) to the Slack target, paced
    25 ms apart, with or without live cards; every notification is delivered."""
    settings = rig.with_sessions(*BURST)
    slack = replace(
        settings.targets["team-slack"], min_interval=timedelta(milliseconds=25), card=card
    )
    settings = replace(
        settings,
        targets={**settings.targets, "team-slack": slack},
        rules=(Rule(name="any", on=("session.status_changed",), notify=("team-slack",)),),
    )
    watcher = Watcher(settings)
    try:
        await watcher.poll_all()
        for sid in BURST:
            rig.sim.complete_run(sid)
        await watcher.poll_all()
        for sid in BURST:
            rig.sim.start_run(sid)
        await watcher.poll_all()
        assert watcher.store_counts()[OutboxStatus.PENDING] == 200
        await watcher.deliver_due()
        assert watcher.store_counts()[OutboxStatus.DELIVERED] == 200
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_slack_burst_of_200_is_paced_complete_and_ordered(rig: Rig) -> None:
    """200 transitions reach one channel completely, in order, with no 429 from Slack."""
    await deliver_burst(rig, card=False)
    messages = rig.slack.messages
    assert len(messages) == 200
    assert rig.slack.rate_limited == 0
    for sid in BURST:
        mine = [m.text for m in messages if f"Title of {sid} " in m.text]
        assert len(mine) == 2
        assert "stopped running" in mine[0]
        assert "is now running" in mine[1]


@pytest.mark.anyio
async def test_a_burst_to_live_cards_is_paced_complete_and_ordered(rig: Rig) -> None:
    """200 transitions of 100 sessions: one card each, two thread lines in order, no 429;
    card posts and thread replies share the channel's pace."""
    await deliver_burst(rig, card=True)
    cards = rig.slack.cards
    assert len(cards) == 100
    assert rig.slack.rate_limited == 0
    for card in cards:
        lines = [r.text for r in rig.slack.replies(CHANNEL, card.ts)]
        assert len(lines) == 2
        assert "stopped running" in lines[0]
        assert "is now running" in lines[1]
        assert "is now running" in card.text  # the two were folded: the latest state shows


@pytest.mark.anyio
async def test_destination_retry_after_is_honoured(rig: Rig) -> None:
    """After a 429 with Retry-After, the destination hears nothing more until it has passed."""
    settings = rig.with_sessions("s1", "s2")
    rig.receiver.respond_with(429, headers={"Retry-After": "2"})
    watcher = Watcher(settings)

    async def drive() -> None:
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store.load_state("s2") is not None)
        )
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: watcher.store.load_state("s1") is not None)
        )
        rig.sim.complete_run("s1")
        rig.sim.complete_run("s2")
        await anyio.to_thread.run_sync(
            lambda: wait_for(
                lambda: sum(r.status == 204 for r in rig.receiver.requests) == 2, timeout=15
            )
        )
        watcher.request_stop()

    await run_driven(watcher, drive, within=30)
    requests = rig.receiver.requests
    limited = next(r for r in requests if r.status == 429)
    after = [r.received - limited.received for r in requests if r.received > limited.received]
    assert after
    assert min(after) >= 2.0


@dataclass
class GatedNotifier:
    """Lets the first send through; holds each later one until `gate` are in flight at once."""

    gate: int
    calls: int = 0
    in_flight: int = 0
    sent: list[str] = field(default_factory=list)
    opened: anyio.Event = field(default_factory=anyio.Event)

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Wait at the gate (except the first), then succeed."""
        self.calls += 1
        if self.calls > 1:
            self.in_flight += 1
            if self.in_flight >= self.gate:
                self.opened.set()
            await self.opened.wait()
            self.in_flight -= 1
        self.sent.append(message.id)
        return Sent("ok")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.anyio
async def test_rows_of_different_sessions_go_out_together(store: SqliteStore) -> None:
    """An unpaced target gets rows of different sessions concurrently (else the gate
    never opens), never two rows of one session at once, and those in order.
    """
    one = ref(id="one")
    events = [
        event(id="one-a", session=one),
        event(id="one-b", session=one),
        *(event(id=f"other-{i}", session=ref(id=f"other-{i}")) for i in range(4)),
    ]
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    # one-a probes the target alone; the four others then go out together.
    notifier = GatedNotifier(gate=4)
    worker = DeliveryWorker(store, jitter=lambda: 0.5)

    async def stop_when_done() -> None:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(notifier.sent) == 6))
        worker.stop()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_done)
            await worker.run({"hook": target("hook")}, {"hook": notifier})
    assert notifier.sent[0] == "one-a"
    assert notifier.sent[-1] == "one-b"
    assert sorted(notifier.sent[1:5]) == [f"other-{i}" for i in range(4)]
    assert store.counts()[OutboxStatus.DELIVERED] == 6


@dataclass
class FailingNotifier:
    """Fails every send, noting how many were in flight at once."""

    sent: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Yield to other tasks a few times while in flight, then fail."""
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.in_flight -= 1
        self.sent.append(message.id)
        return SendFailed(FailureKind.RETRYABLE, "down")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.anyio
async def test_a_failing_target_gets_one_row_at_a_time(store: SqliteStore) -> None:
    """Until a target accepts a row, rows are tried alone, never as a batch."""
    queue(store, "e1", "e2", "e3")
    notifier = FailingNotifier()
    worker = DeliveryWorker(store, jitter=lambda: 0.5)

    async def stop_when_all_tried() -> None:
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(notifier.sent) == 3))
        worker.stop()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_all_tried)
            await worker.run({"hook": target("hook")}, {"hook": notifier})
    assert sorted(notifier.sent) == ["e1", "e2", "e3"]
    assert notifier.most_in_flight == 1


@pytest.mark.parametrize(
    ("made", "together"),
    [
        (lambda: target("hook"), True),
        (lambda: replace(target("hook"), min_interval=timedelta(seconds=1)), False),
        (
            lambda: SlackTarget(
                name="s", token=Secret("xoxb-1"), channel="C1", min_interval=timedelta(0)
            ),
            False,
        ),
        (
            lambda: SlackWebhookTarget(
                name="w", url=Secret("https://hooks.slack.com/x"), min_interval=timedelta(0)
            ),
            False,
        ),
    ],
    ids=["webhook", "paced-webhook", "slack-unpaced", "slack-webhook-unpaced"],
)
def test_only_unpaced_webhooks_send_together(made: Any, together: bool) -> None:
    """Concurrent sends are for webhooks without pacing; Slack always gets one at a time."""
    assert sends_together(made()) is together
