"""Live Slack cards through real HTTP: the simulator, the daemon's poll and delivery, fake Slack."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.core.factories import T0, event, ref
from tests.rig import CHANNEL, Rig, running_rig
from watcher.core.card import CardRenderer, EarlierCard, render_card, render_thread_reply
from watcher.core.message import SlackMessage
from watcher.core.model import Event, EventType, TokenUsage
from watcher.core.rules import Route
from watcher.core.settings import Rule, Settings, SlackTarget, SlackTemplate, WatchedSession
from watcher.daemon import Watcher
from watcher.delivery import DeliveryWorker, keeps_card
from watcher.notifiers import build_notifier
from watcher.notifiers.slack import SlackNotifier
from watcher.store import Card, OutboxRow, OutboxStatus, SqliteStore
from watcher.testing.sinks import SlackPost

STORY = Rule(
    name="story",
    on=(
        "session.discovered",
        "session.status_changed",
        "session.messages_added",
        "session.finished",
    ),
    notify=("team-slack",),
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Every server on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def story_settings(rig: Rig, *, title: str = "Refactor billing", **slack: Any) -> Settings:
    """One pending session `s1`, the story rule to the Slack target (with `slack` changes)."""
    rig.sim.add_session(
        "s1",
        title=title,
        status="pending",
        message_count=1,
        model="claude-test-1",
        token_usage=TokenUsage(factory_credits=0.0),
    )
    target = replace(rig.settings.targets["team-slack"], **slack)
    return replace(
        rig.settings,
        sessions=(WatchedSession(id="s1"),),
        targets={**rig.settings.targets, "team-slack": target},
        rules=(STORY,),
    )


async def step(watcher: Watcher) -> None:
    """One poll of every session, then every notification due."""
    await watcher.poll_all()
    await watcher.deliver_due()


async def run_story(rig: Rig, watcher: Watcher) -> None:
    """pending -> running (work) -> idle with a new completedAt, delivering after each poll."""
    await step(watcher)  # discovered, pending: the card
    rig.sim.start_run("s1", messages=0)
    await step(watcher)  # running (and one message)
    rig.sim.add_messages("s1", 3)
    rig.sim.update("s1", assistant_active_ms=45_000)
    await step(watcher)  # three messages
    rig.sim.update("s1", assistant_active_ms=120_000)
    rig.sim.complete_run("s1", messages=2)
    await step(watcher)  # stopped, messages and finished: queued together


def card_text(post: SlackPost) -> str:
    """Everything a card shows: its fallback text and every block's text."""
    return post.text + "\n" + json.dumps(post.blocks, ensure_ascii=False)


def card_calls(watcher: Watcher) -> dict[str, float]:
    """`factory_watcher_card_calls_total` of the Slack target, by call, from /metrics text."""
    body, _ = watcher.metrics.exposition(None)
    return {
        sample.labels["call"]: sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "factory_watcher_card_calls_total"
        and sample.labels["target"] == "team-slack"
    }


def outbox_statuses(watcher: Watcher) -> list[OutboxStatus]:
    """The status of every outbox row."""
    return [row.status for row in watcher.store.list_outbox()]


@pytest.mark.anyio
async def test_one_card_per_session_updated_in_place_with_a_thread(rig: Rig) -> None:
    """pending -> running -> idle: one card, updates on its ts, replies in its thread, a summary."""
    watcher = Watcher(story_settings(rig))
    try:
        await run_story(rig, watcher)
        statuses = outbox_statuses(watcher)
        calls = card_calls(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert calls == {"post": 1, "update": 3, "reply": 5}
    cards = rig.slack.cards
    assert len(cards) == 1
    ts = cards[0].ts
    assert rig.slack.calls("chat.postMessage") == 1 + len(rig.slack.replies(CHANNEL, ts))
    updates = rig.slack.updates
    # Three later polls, three updates: the last poll's three notifications were folded.
    assert [u.ts for u in updates] == [ts, ts, ts]
    replies = [r.text for r in rig.slack.replies(CHANNEL, ts)]
    assert len(replies) == 5
    assert "is now running" in replies[0]
    assert "3 new message(s)" in replies[1]
    assert any("finished" in line and "took" in line for line in replies)
    final = rig.slack.latest(CHANNEL, ts)
    assert final is not None
    shown = card_text(final)
    for fact in ("This run:", "took", "active 2m 0s", "new message(s)", "tokens", "credits"):
        assert fact in shown
    assert "*Messages*" in shown
    assert "claude-test-1" in shown
    assert statuses == [OutboxStatus.DELIVERED] * 6


@pytest.mark.anyio
@pytest.mark.parametrize(
    "title", ["<!channel> deploy now", "ping <@U123> and <!here>", "<https://evil|click>"]
)
async def test_mentions_in_titles_stay_inert_in_card_and_thread(rig: Rig, title: str) -> None:
    """A title with `<!channel>` or `<@U123>` is escaped in the card, its text and its thread."""
    watcher = Watcher(story_settings(rig, title=title))
    try:
        await step(watcher)
        rig.sim.start_run("s1", messages=0)
        await step(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert len(rig.slack.cards) == 1
    shown = [card_text(p) for p in rig.slack.messages + rig.slack.updates]
    assert len(shown) == 3  # the card, one update, one reply
    for text in shown:
        assert "<!" not in text
        assert "<@" not in text
        assert "<https://evil" not in text
        assert "&lt;" in text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("refusal", "linked"),
    [("deleted", False), ("cant_update_message", True), ("edit_window_closed", True)],
)
async def test_a_card_that_cannot_be_updated_is_replaced_by_one_linking_it(
    rig: Rig, refusal: str, linked: bool
) -> None:
    """A deleted or uneditable card: the next notification posts a new card naming the old."""
    watcher = Watcher(story_settings(rig))
    try:
        await step(watcher)
        (first,) = rig.slack.cards
        if refusal == "deleted":
            rig.slack.delete_message(CHANNEL, first.ts)
        else:
            rig.slack.inject_error(refusal)
        rig.sim.start_run("s1", messages=0)
        await step(watcher)
        rig.sim.add_messages("s1", 2)
        await step(watcher)
        statuses = outbox_statuses(watcher)
        stored = watcher.store.card("team-slack", "s1")
        calls = card_calls(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert (calls["post"], calls["replaced"]) == (2, 1)
    first_card, second = rig.slack.cards
    assert second.ts != first_card.ts
    assert stored is not None
    assert (stored.ts, stored.replaced_ts) == (second.ts, first_card.ts)
    current = rig.slack.latest(CHANNEL, second.ts)
    assert current is not None
    shown = card_text(current)
    assert "earlier card" in shown
    assert ("https://fake.slack.test/archives/" in shown) is linked
    # The later notification updated the new card in place, and nothing was lost.
    assert [u.ts for u in rig.slack.updates][-1] == second.ts
    assert statuses == [OutboxStatus.DELIVERED] * 3


@pytest.mark.anyio
async def test_card_false_keeps_one_message_per_notification(rig: Rig) -> None:
    """With `card: false`, every notification is a message of its own; nothing is edited."""
    watcher = Watcher(story_settings(rig, card=False))
    try:
        await run_story(rig, watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert len(rig.slack.messages) == 6
    assert rig.slack.updates == []
    assert all(m.thread_ts is None for m in rig.slack.messages)


@pytest.mark.anyio
async def test_thread_false_updates_the_card_without_replies(rig: Rig) -> None:
    """With `thread: false`, the card is kept current and its thread stays empty."""
    watcher = Watcher(story_settings(rig, thread=False))
    try:
        await run_story(rig, watcher)
        statuses = outbox_statuses(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    (card,) = rig.slack.messages
    assert [u.ts for u in rig.slack.updates] == [card.ts] * 3
    assert statuses == [OutboxStatus.DELIVERED] * 6


@pytest.mark.anyio
async def test_slack_webhook_targets_keep_one_message_per_notification(rig: Rig) -> None:
    """An incoming webhook cannot edit: it gets every notification as a message."""
    settings = story_settings(rig)
    settings = replace(settings, rules=(replace(STORY, notify=("ops", "team-slack")),))
    watcher = Watcher(settings)
    try:
        await run_story(rig, watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert len(rig.slack_hook.messages) == 6
    assert len(rig.slack.cards) == 1


@pytest.mark.anyio
async def test_queued_notifications_fold_into_one_update_latest_wins(rig: Rig) -> None:
    """Several pending rows of one session: one update showing the latest, a line for each."""
    watcher = Watcher(story_settings(rig))
    try:
        await step(watcher)
        rig.sim.start_run("s1", messages=0)
        await watcher.poll_all()
        rig.sim.add_messages("s1", 4)
        await watcher.poll_all()
        rig.sim.interrupt("s1")
        await watcher.poll_all()
        assert watcher.store_counts()[OutboxStatus.PENDING] == 3
        await watcher.deliver_due()
        statuses = outbox_statuses(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    (card,) = rig.slack.cards
    (update,) = rig.slack.updates
    assert update.ts == card.ts
    assert "stopped running" in update.text  # the latest notification's state
    lines = [r.text for r in rig.slack.replies(CHANNEL, card.ts)]
    assert len(lines) == 3
    assert "is now running" in lines[0]
    assert "4 new message(s)" in lines[1]
    assert "stopped running" in lines[2]
    assert statuses == [OutboxStatus.DELIVERED] * 4


@pytest.mark.anyio
@pytest.mark.parametrize(("history", "cards"), [(True, 1), (False, 2)])
async def test_a_card_posted_before_a_crash_is_found_again(
    rig: Rig, history: bool, cards: int
) -> None:
    """A post intent without a ts: the card is looked up by its marker and adopted.

    Without the history scope it cannot be found, and a second card is the price of
    not losing the notification.
    """
    settings = story_settings(rig)
    watcher = Watcher(settings)
    rig.slack.history_scope = history
    target = settings.targets["team-slack"]
    assert isinstance(target, SlackTarget)
    notifier = SlackNotifier(target)
    try:
        await watcher.poll_all()  # discovered: one pending row, not sent yet
        # What a process killed right after Slack accepted its card left behind:
        now = datetime.now(UTC)
        watcher.store.intend_card(Card("team-slack", "s1", CHANNEL, None, "m-1", now), now)
        await notifier.post(SlackMessage(text="card before the crash"), now=now, marker="m-1")
        await watcher.deliver_due()
        stored = watcher.store.card("team-slack", "s1")
        statuses = outbox_statuses(watcher)
    finally:
        await notifier.aclose()
        await watcher.aclose()
        watcher.store.close()
    assert len(rig.slack.cards) == cards
    assert rig.slack.calls("conversations.history") == 1
    assert stored is not None
    assert stored.ts == rig.slack.cards[-1].ts
    assert stored.posting_since is None
    if history:
        (update,) = rig.slack.updates
        assert update.ts == rig.slack.cards[0].ts  # the adopted card shows the state now
    assert statuses == [OutboxStatus.DELIVERED]


@pytest.mark.parametrize(
    ("target", "kind", "session", "expected"),
    [
        ("card", EventType.STATUS_CHANGED, True, True),
        ("card", EventType.API_UNAVAILABLE, False, False),
        ("card", EventType.DIGEST, False, False),
        ("no-card", EventType.STATUS_CHANGED, True, False),
        ("slack_webhook", EventType.STATUS_CHANGED, True, False),
    ],
)
def test_which_notifications_go_to_a_card(
    rig: Rig, target: str, kind: EventType, session: bool, expected: bool
) -> None:
    """Only session events to a Slack bot target with `card` on go to the card."""
    slack = rig.settings.targets["team-slack"]
    chosen = {
        "card": slack,
        "no-card": replace(slack, card=False),
        "slack_webhook": rig.settings.targets["ops"],
    }[target]
    notifier = build_notifier(chosen)
    found = event(kind)
    row = OutboxRow(
        1,
        found if session else replace(found, session=None),
        "r",
        chosen.name,
        OutboxStatus.PENDING,
        0,
        T0,
        T0,
        None,
    )
    assert keeps_card(chosen, notifier, row) is expected


def test_render_card_refuses_a_sessionless_event() -> None:
    """A card belongs to a session; asking for one without is a programming error."""
    with pytest.raises(ValueError, match="no session"):
        render_card(replace(event(), session=None), "r")


class Clock:
    """A settable clock for the delivery worker."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def card_desk(rig: Rig) -> Iterator[tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]]:
    """A store, a delivery worker on a settable clock, and the rig's Slack target."""
    store = SqliteStore(":memory:")
    clock = Clock()
    worker = DeliveryWorker(store, clock=clock, jitter=lambda: 0.0)
    target = rig.settings.targets["team-slack"]
    assert isinstance(target, SlackTarget)
    yield store, worker, target, clock
    store.close()


def queue_story(store: SqliteStore, at: datetime, *kinds: EventType) -> None:
    """Queue one event of each kind about s1 for the Slack target."""
    events = [
        event(kind, id=f"e{i}-{kind}", session=ref(created_at=at, message_count=i))
        for i, kind in enumerate(kinds)
    ]
    store.record_events(events, [(e, Route("story", "team-slack")) for e in events], at)


async def drain(worker: DeliveryWorker, target: SlackTarget) -> None:
    """Deliver what is due to the Slack target through a real notifier."""
    notifier = SlackNotifier(target)
    try:
        await worker.drain_once({target.name: target}, {target.name: notifier})
    finally:
        await notifier.aclose()


class BusyCardWrites:
    """Runs store calls inline, refusing the first `refusals` card writes as a busy store."""

    def __init__(self, store: SqliteStore, refusals: int) -> None:
        self.store = store
        self.refusals = refusals
        self.waits: list[float] = []

    async def __call__(self, fn: Callable[..., object], *args: object) -> object:
        if fn == self.store.record_card and self.refusals > 0:
            self.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return fn(*args)

    async def sleep(self, seconds: float) -> None:
        """Note the wait between two attempts; return at once."""
        self.waits.append(seconds)


@pytest.mark.anyio
@pytest.mark.parametrize("threaded", [False, True], ids=["card", "thread"])
async def test_a_busy_store_after_a_card_call_retries_the_write_never_the_call(
    rig: Rig, threaded: bool
) -> None:
    """The card's ts and its rows are written once the store takes them: nothing is posted
    twice and no row that reached Slack becomes a dead letter.
    """
    store = SqliteStore(":memory:")
    clock = Clock()
    busy = BusyCardWrites(store, refusals=2)
    worker = DeliveryWorker(store, clock=clock, jitter=lambda: 0.0, db=busy, sleep=busy.sleep)
    target = replace(rig.settings.targets["team-slack"], thread=threaded)
    assert isinstance(target, SlackTarget)
    try:
        queue_story(store, clock.now, EventType.DISCOVERED)
        await drain(worker, target)
        queue_story(store, clock.now, EventType.STARTED, EventType.MESSAGES_ADDED)
        busy.refusals = 2
        await drain(worker, target)
        assert {r.status for r in store.list_outbox()} == {OutboxStatus.DELIVERED}
        (card,) = rig.slack.cards
        assert [u.ts for u in rig.slack.updates] == [card.ts]
        assert len(rig.slack.replies(CHANNEL, card.ts)) == (2 if threaded else 0)
        assert (worker.stats.mark_retries, len(busy.waits)) == (4, 4)
    finally:
        store.close()


@pytest.mark.anyio
async def test_a_retryable_update_failure_retries_every_folded_row(
    rig: Rig, card_desk: tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]
) -> None:
    """A 5xx-like refusal of the update: the rows wait and the same card is updated later."""
    store, worker, target, clock = card_desk
    queue_story(store, clock.now, EventType.DISCOVERED)
    await drain(worker, target)
    queue_story(store, clock.now, EventType.STARTED, EventType.MESSAGES_ADDED)
    rig.slack.inject_error("internal_error", method="chat.update")
    await drain(worker, target)
    pending = [r for r in store.list_outbox() if r.status is OutboxStatus.PENDING]
    assert len(pending) == 2
    assert all(r.attempts == 1 and "internal_error" in (r.last_error or "") for r in pending)
    clock.now += timedelta(minutes=1)
    await drain(worker, target)
    (card,) = rig.slack.cards
    assert [u.ts for u in rig.slack.updates] == [card.ts]
    assert len(rig.slack.replies(CHANNEL, card.ts)) == 2
    assert {r.status for r in store.list_outbox()} == {OutboxStatus.DELIVERED}


@pytest.mark.anyio
async def test_a_refused_thread_reply_is_a_dead_letter_not_a_silent_loss(
    rig: Rig, card_desk: tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]
) -> None:
    """The card is updated; a reply Slack refuses for good leaves its row as a dead letter."""
    store, worker, target, clock = card_desk
    queue_story(store, clock.now, EventType.DISCOVERED)
    await drain(worker, target)
    queue_story(store, clock.now, EventType.STARTED, EventType.MESSAGES_ADDED)
    rig.slack.inject_error("invalid_blocks", method="chat.postMessage", times=1)
    await drain(worker, target)
    statuses = {r.event.type: r.status for r in store.list_outbox() if isinstance(r, OutboxRow)}
    assert statuses[EventType.STARTED] is OutboxStatus.DEAD
    # The row after it still reached the thread: the dead one held nothing back.
    assert statuses[EventType.MESSAGES_ADDED] is OutboxStatus.DELIVERED
    (card,) = rig.slack.cards
    assert len(rig.slack.updates) == 1
    (reply,) = rig.slack.replies(CHANNEL, card.ts)
    assert "new message(s)" in reply.text


@pytest.mark.anyio
async def test_a_post_slack_refused_needs_no_lookup_before_the_next(
    rig: Rig, card_desk: tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]
) -> None:
    """A rate-limited first post was never posted: the retry posts without reading history."""
    store, worker, target, clock = card_desk
    queue_story(store, clock.now, EventType.DISCOVERED)
    rig.slack.inject_error("ratelimited", status=429, retry_after="1", method="chat.postMessage")
    await drain(worker, target)
    stored = store.card("team-slack", "s1")
    assert stored is not None
    assert (stored.ts, stored.posting_since) == (None, None)
    clock.now += timedelta(minutes=1)
    await drain(worker, target)
    assert len(rig.slack.cards) == 1
    assert rig.slack.calls("conversations.history") == 0
    assert {r.status for r in store.list_outbox()} == {OutboxStatus.DELIVERED}


@pytest.mark.anyio
async def test_a_card_renderer_bug_dead_letters_its_rows_only(
    rig: Rig, card_desk: tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]
) -> None:
    """An exception from the injected card renderer costs its rows, not the worker."""
    store, _, target, clock = card_desk

    def broken(event: Event, rule: str, earlier: EarlierCard | None) -> SlackMessage:
        raise RuntimeError("template exploded")

    worker = DeliveryWorker(store, clock=clock, cards=lambda _target: CardRenderer(card=broken))
    queue_story(store, clock.now, EventType.DISCOVERED, EventType.STARTED)
    await drain(worker, target)
    rows = store.list_outbox()
    assert {r.status for r in rows} == {OutboxStatus.DEAD}
    assert all("card error: RuntimeError: template exploded" in (r.last_error or "") for r in rows)
    assert rig.slack.messages == []


@pytest.mark.anyio
async def test_a_reply_renderer_bug_keeps_what_was_delivered_before_it(
    rig: Rig, card_desk: tuple[SqliteStore, DeliveryWorker, SlackTarget, Clock]
) -> None:
    """A thread line that cannot be rendered: rows already delivered stay delivered."""
    store, _, target, clock = card_desk

    def reply(event: Event, rule: str) -> SlackMessage:
        if event.type is EventType.STARTED:
            raise RuntimeError("line exploded")
        return render_thread_reply(event, rule)

    worker = DeliveryWorker(store, clock=clock, cards=lambda _target: CardRenderer(reply=reply))
    queue_story(store, clock.now, EventType.DISCOVERED)
    await drain(worker, target)
    queue_story(store, clock.now, EventType.MESSAGES_ADDED, EventType.STARTED)
    await drain(worker, target)
    statuses = {r.event.type: r.status for r in store.list_outbox() if isinstance(r, OutboxRow)}
    assert statuses == {
        EventType.DISCOVERED: OutboxStatus.DELIVERED,
        EventType.MESSAGES_ADDED: OutboxStatus.DELIVERED,
        EventType.STARTED: OutboxStatus.DEAD,
    }
    assert len(rig.slack.cards) == 1


@pytest.mark.anyio
async def test_a_slack_template_shapes_the_card_and_stays_inert(rig: Rig) -> None:
    """A target's template renders the card itself (post and update); titles stay inert."""
    template = SlackTemplate(text="{{ session.title }} is {{ session.status }} ({{ rule.name }})")
    settings = story_settings(rig, title="<!channel> <@U123> deploy", template=template)
    watcher = Watcher(settings)
    try:
        await step(watcher)
        rig.sim.start_run("s1", messages=0)
        await step(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    [card] = rig.slack.cards
    assert card.text == "&lt;!channel&gt; &lt;@U123&gt; deploy is pending (story)"
    latest = rig.slack.latest(CHANNEL, card.ts)
    assert latest is not None
    assert latest.text == "&lt;!channel&gt; &lt;@U123&gt; deploy is running (story)"
    [reply] = rig.slack.replies(CHANNEL, card.ts)  # thread lines stay built-in
    assert "is now running" in reply.text
    for post in [card, latest, reply]:
        assert "<!channel>" not in card_text(post)
        assert "<@U123>" not in card_text(post)


@pytest.mark.anyio
async def test_the_final_card_quotes_the_agents_last_answer(rig: Rig) -> None:
    """With include_last_answer, the card of the finished run quotes the answer, escaped."""
    settings = story_settings(rig)
    settings = replace(settings, rules=(replace(STORY, include_last_answer=True),))
    watcher = Watcher(settings)
    try:
        await step(watcher)
        rig.sim.start_run("s1", messages=0)
        await step(watcher)
        rig.sim.add_message("s1", "All done <!here>: billing refactored & tested")
        rig.sim.complete_run("s1", messages=1)
        await step(watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    [card] = rig.slack.cards
    final = rig.slack.latest(CHANNEL, card.ts)
    assert final is not None
    shown = card_text(final)
    assert "All done &lt;!here&gt;: billing refactored &amp; tested" in shown
    assert "<!here>" not in shown
