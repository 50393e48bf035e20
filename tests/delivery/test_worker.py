"""The worker: one dispatch per row picks the card or the plain path; its lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.core.factories import event, ref
from watcher.core.message import (
    FailureKind,
    Message,
    SendFailed,
    SendOutcome,
    Sent,
    SlackMessage,
)
from watcher.core.rules import Route
from watcher.core.secret import Secret
from watcher.core.settings import SlackTarget, Target, WebhookTarget
from watcher.delivery import DeliveryWorker, Dispatched
from watcher.store import OutboxRow, OutboxStatus, SqliteStore

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


@dataclass
class FakeSlack:
    """A notifier that keeps cards (posts and updates) and sends plain messages, noting each."""

    target_name: str = "x"
    answer: SendOutcome = field(default_factory=lambda: Sent("plain"))
    calls: list[str] = field(default_factory=list)

    @property
    def channel(self) -> str:
        """The one channel."""
        return "C1"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """A plain message: the scripted answer."""
        self.calls.append("send")
        return self.answer

    async def post(
        self,
        message: SlackMessage,
        *,
        now: datetime,
        thread_ts: str | None = None,
        marker: str | None = None,
    ) -> SendOutcome:
        """A card (or a thread reply): posted."""
        self.calls.append("post")
        return Sent("1.0")

    async def update(
        self, channel: str, ts: str, message: SlackMessage, *, now: datetime
    ) -> SendOutcome:
        """A card updated in place."""
        self.calls.append("update")
        return Sent(ts)

    async def find_card(
        self, marker: str, oldest: datetime, *, now: datetime
    ) -> str | SendFailed | None:
        """No lost post to find."""
        return None

    async def permalink(self, ts: str, *, now: datetime) -> str | None:
        """No links."""
        return None

    async def aclose(self) -> None:
        """Nothing to release."""


def slack(*, card: bool) -> SlackTarget:
    """An unpaced Slack bot target `x`, with or without live cards (no thread)."""
    return SlackTarget(
        name="x",
        token=Secret("xoxb-1"),
        channel="C1",
        min_interval=timedelta(0),
        card=card,
        thread=False,
    )


WEBHOOK = WebhookTarget(name="x", url="https://example.invalid/x")
DOWN = SendFailed(FailureKind.RETRYABLE, "HTTP 503", details={"status": 503})


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    """A throwaway store with two pending rows of session s1 for target `x`."""
    opened = SqliteStore(":memory:")
    events = [event(id="e1", session=ref(id="s1")), event(id="e2", session=ref(id="s1"))]
    opened.record_events(events, [(e, Route("r", "x")) for e in events], T0)
    yield opened
    opened.close()


def head(store: SqliteStore) -> OutboxRow:
    """The one due row: the session's oldest."""
    (row,) = store.due("x", T0, 10)
    assert isinstance(row, OutboxRow)
    return row


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "answer", "calls", "covered", "accepted"),
    [
        (WEBHOOK, Sent("ok"), ["send"], 1, True),
        (WEBHOOK, DOWN, ["send"], 1, False),
        (slack(card=False), Sent("1.0"), ["send"], 1, True),
        (slack(card=True), Sent("1.0"), ["post"], 2, None),
    ],
    ids=["webhook", "webhook-down", "slack-without-card", "slack-card"],
)
async def test_one_dispatch_per_row_picks_the_card_or_the_plain_path(
    store: SqliteStore,
    target: Target,
    answer: SendOutcome,
    calls: list[str],
    covered: int,
    accepted: bool | None,
) -> None:
    """A card folds the session's pending rows into one post; anything else sends the row."""
    worker = DeliveryWorker(store, clock=lambda: T0, jitter=lambda: 0.5)
    notifier = FakeSlack(answer=answer)
    row = head(store)
    dispatched = await worker.dispatch(target, notifier, row)
    ids = [r.id for r in sorted(store.list_outbox(), key=lambda r: r.id)]
    assert dispatched == Dispatched(tuple(ids[:covered]), accepted)
    assert notifier.calls == calls


@pytest.mark.anyio
async def test_drain_once_counts_every_row_a_dispatch_covered(store: SqliteStore) -> None:
    """`drain_once` on a card target: one card for two rows, both counted and delivered."""
    worker = DeliveryWorker(store, clock=lambda: T0)
    notifier = FakeSlack()
    target = slack(card=True)
    assert await worker.drain_once({"x": target}, {"x": notifier}) == 2
    assert notifier.calls == ["post"]
    assert store.counts()[OutboxStatus.DELIVERED] == 2
    assert worker.stats.delivered == 2


@pytest.mark.anyio
async def test_a_worker_without_targets_reports_progress_until_stopped() -> None:
    """With no lane to beat, the worker beats itself, and `stop` ends `run`."""
    beats: list[int] = []
    store = SqliteStore(":memory:")
    worker = DeliveryWorker(store, on_progress=lambda: beats.append(1))
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run, {}, {})
                await anyio.wait_all_tasks_blocked()
                assert beats == [1]
                worker.stop()
    finally:
        store.close()
