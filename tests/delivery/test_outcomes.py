"""Outcomes: what becomes of a send, decided in one place for plain and card rows alike."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.core.factories import event, ref
from watcher.core.message import FailureKind, SendFailed, SendOutcome, Sent
from watcher.core.rules import Route
from watcher.core.settings import DeliveryLimits, WebhookTarget
from watcher.delivery import DeliveryStats
from watcher.delivery.hooks import run_inline
from watcher.delivery.outcomes import MARK_ATTEMPTS, MARK_FIRST_WAIT, MARK_MOST_WAIT, Outcomes
from watcher.ops.metrics import Metrics
from watcher.store import OutboxRow, OutboxStatus, SqliteStore

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)
SECRET = "s3cret"


def hook(limits: DeliveryLimits | None = None) -> WebhookTarget:
    """The webhook target `hook`, with delivery limits."""
    return WebhookTarget(
        name="hook", url="https://example.invalid/hook", limits=limits or DeliveryLimits()
    )


@dataclass
class Desk:
    """Outcomes on a throwaway store at `T0`, with everything it reports to in view."""

    store: SqliteStore
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    metrics: Metrics = field(default_factory=Metrics)
    holds: list[tuple[str, datetime]] = field(default_factory=list)
    progress: int = 0
    refusals: int = 0  # marks of sent rows the store refuses before it takes one
    waits: list[float] = field(default_factory=list)  # between attempts of a refused mark
    on_wait: Callable[[], None] = lambda: None

    async def db(self, fn: Callable[..., object], *args: object) -> object:
        """The store call, refused as busy while `refusals` last (marks only)."""
        if fn == self.store.mark_delivered and self.refusals > 0:
            self.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return await run_inline(fn, *args)

    async def sleep(self, seconds: float) -> None:
        """Note the wait and return at once (after `on_wait`, at a checkpoint)."""
        self.waits.append(seconds)
        self.on_wait()
        await anyio.lowlevel.checkpoint()

    def outcomes(self) -> Outcomes:
        """Outcomes that mask `SECRET` and hold lanes into `holds`."""

        def beat() -> None:
            self.progress += 1

        return Outcomes(
            self.store,
            db=self.db,
            sleep=self.sleep,
            clock=lambda: T0,
            jitter=lambda: 0.5,
            redact=lambda text: text.replace(SECRET, "***"),
            stats=self.stats,
            metrics=self.metrics,
            on_progress=beat,
            hold=lambda name, until: self.holds.append((name, until)),
        )

    def queue(self, *sessions: str) -> list[OutboxRow]:
        """One event per session for `hook`; their rows, as due at `T0`."""
        events = [event(id=f"e-{s}", session=ref(id=s)) for s in sessions]
        self.store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
        return self.due()

    def due(self) -> list[OutboxRow]:
        """Every pending row, whenever it is due."""
        rows = self.store.due("hook", T0 + timedelta(days=1), 100)
        return [r for r in rows if isinstance(r, OutboxRow)]

    def row(self, row_id: int) -> OutboxRow:
        """The stored row `row_id` as it is now."""
        (row,) = [r for r in self.store.list_outbox() if r.id == row_id]
        assert isinstance(row, OutboxRow)
        return row

    def counted(self, name: str, **labels: str) -> float:
        """One counter's value in the metrics (0 when the series is absent)."""
        body, _ = self.metrics.exposition(None)
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == f"factory_watcher_{name}_total" and sample.labels == labels:
                    return float(sample.value)
        return 0.0


@pytest.fixture
def desk() -> Iterator[Desk]:
    """A desk on an in-memory store."""
    store = SqliteStore(":memory:")
    yield Desk(store)
    store.close()


RETRYABLE = SendFailed(FailureKind.RETRYABLE, f"HTTP 503 {SECRET}", details={"status": 503})


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("outcome", "limits", "status", "last_error", "next_attempt", "held"),
    [
        (Sent("h1"), None, OutboxStatus.DELIVERED, None, None, None),
        (RETRYABLE, None, OutboxStatus.PENDING, "HTTP 503 ***", T0 + timedelta(seconds=1), None),
        (
            SendFailed(FailureKind.RETRYABLE, "HTTP 429", timedelta(seconds=30), {"status": 429}),
            None,
            OutboxStatus.PENDING,
            "HTTP 429",
            T0 + timedelta(seconds=30),
            T0 + timedelta(seconds=30),
        ),
        (
            SendFailed(FailureKind.PERMANENT, f"HTTP 404 {SECRET}", details={"status": 404}),
            None,
            OutboxStatus.DEAD,
            "permanent failure: HTTP 404 ***",
            None,
            None,
        ),
        (
            RETRYABLE,
            DeliveryLimits(max_attempts=1),
            OutboxStatus.DEAD,
            "gave up after 1 attempts: HTTP 503 ***",
            None,
            None,
        ),
        (
            RETRYABLE,
            DeliveryLimits(max_age=timedelta(milliseconds=500)),
            OutboxStatus.DEAD,
            "older than max_age (0.5s) before it could be sent: HTTP 503 ***",
            None,
            None,
        ),
    ],
    ids=["sent", "retryable", "retry-after", "permanent", "last-attempt", "too-old"],
)
async def test_a_plain_rows_outcome_is_decided_and_recorded(
    desk: Desk,
    outcome: SendOutcome,
    limits: DeliveryLimits | None,
    status: OutboxStatus,
    last_error: str | None,
    next_attempt: datetime | None,
    held: datetime | None,
) -> None:
    """Sent, retried (backoff or Retry-After, which holds the lane) or dead, reason masked."""
    (row,) = desk.queue("s1")
    recorded = await desk.outcomes().settle(hook(limits), row, outcome, "status s1 -> hook")
    stored = desk.row(row.id)
    assert (stored.status, stored.attempts, stored.last_error) == (status, 1, last_error)
    if next_attempt is not None:
        assert stored.next_attempt_at == next_attempt
    assert desk.holds == ([] if held is None else [("hook", held)])
    assert SECRET not in repr(recorded)
    counted = {"delivered": "sent", "pending": "retried", "dead": "dead"}[status]
    assert desk.counted("notifications", target="hook", outcome=counted) == 1
    assert (desk.stats.delivered, desk.stats.retried, desk.stats.dead) == (
        int(counted == "sent"),
        int(counted == "retried"),
        int(counted == "dead"),
    )
    failures = desk.counted("notification_failures", target="hook", reason="http_5xx")
    assert failures == (1 if outcome is RETRYABLE else 0)
    assert desk.progress == 1


@pytest.mark.anyio
async def test_a_failed_card_call_decides_each_rows_fate_by_its_own_attempts(
    desk: Desk,
) -> None:
    """One failed call carrying two rows: the one out of attempts dies, the other waits."""
    outcomes = desk.outcomes()
    target = hook(DeliveryLimits(max_attempts=2))
    first, _ = desk.queue("s1", "s2")
    await outcomes.failed(target, [first], RETRYABLE)
    rows = desk.due()
    assert [r.attempts for r in rows] == [1, 0]
    await outcomes.failed(target, rows, RETRYABLE)
    assert [desk.row(r.id).status for r in rows] == [OutboxStatus.DEAD, OutboxStatus.PENDING]
    assert desk.row(rows[1].id).last_error == "HTTP 503 ***"
    assert desk.counted("notification_failures", target="hook", reason="http_5xx") == 2
    assert (desk.stats.retried, desk.stats.dead) == (2, 1)


@pytest.mark.anyio
async def test_rows_delivered_on_a_card_are_marked_and_counted(desk: Desk) -> None:
    """`delivered` marks and counts; `count_delivered` only counts (the store marked them)."""
    outcomes = desk.outcomes()
    one, two = desk.queue("s1", "s2")
    await outcomes.delivered(hook(), [one], "1.0")
    outcomes.count_delivered(hook(), [two], "2.0")
    assert [desk.row(r.id).status for r in (one, two)] == [
        OutboxStatus.DELIVERED,
        OutboxStatus.PENDING,
    ]
    assert desk.counted("notifications", target="hook", outcome="sent") == 2
    assert desk.stats.delivered == 2


@pytest.mark.anyio
async def test_a_row_our_bug_cannot_send_is_buried_once_with_its_cause(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """`bury` dead-letters the row with a masked reason, logged once with the traceback."""
    (row,) = desk.queue("s1")
    error = ValueError("boom")
    with caplog.at_level(logging.ERROR, logger="watcher.delivery"):
        outcome = await desk.outcomes().bury("hook", row.id, "x", f"cannot render: {SECRET}", error)
    assert outcome == SendFailed(FailureKind.PERMANENT, "cannot render: ***")
    assert (desk.row(row.id).status, desk.row(row.id).last_error) == (
        OutboxStatus.DEAD,
        "cannot render: ***",
    )
    (logged,) = caplog.records
    assert logged.exc_info is not None
    assert logged.exc_info[1] is error
    assert desk.counted("notifications", target="hook", outcome="dead") == 1


@pytest.mark.anyio
async def test_a_refused_mark_is_tried_again_with_backoff_and_the_lane_beating(
    desk: Desk,
) -> None:
    """The store refuses the mark of a sent row three times: the fourth try marks it."""
    (row,) = desk.queue("s1")
    desk.refusals = 3
    await desk.outcomes().settle(hook(), row, Sent("h1"), "status s1 -> hook")
    assert desk.row(row.id).status is OutboxStatus.DELIVERED
    assert desk.waits == [MARK_FIRST_WAIT, MARK_FIRST_WAIT * 2, MARK_FIRST_WAIT * 4]
    assert (desk.stats.mark_retries, desk.stats.delivered) == (3, 1)
    assert desk.progress == 3 + 1  # a beat per wait, and the outcome's


@pytest.mark.anyio
async def test_a_mark_refused_every_time_gives_up_after_the_last_attempt(desk: Desk) -> None:
    """Bounded: `MARK_ATTEMPTS` tries, waits capped, then the error; the row stays pending."""
    (row,) = desk.queue("s1")
    desk.refusals = MARK_ATTEMPTS + 1
    with pytest.raises(sqlite3.OperationalError):
        await desk.outcomes().settle(hook(), row, Sent("h1"), "status s1 -> hook")
    assert desk.refusals == 1  # the last refusal was never asked for
    assert len(desk.waits) == MARK_ATTEMPTS - 1
    assert max(desk.waits) == MARK_MOST_WAIT
    assert desk.row(row.id).status is OutboxStatus.PENDING
    assert (desk.stats.mark_retries, desk.stats.delivered) == (MARK_ATTEMPTS - 1, 0)


@pytest.mark.anyio
async def test_stopping_while_a_mark_is_refused_leaves_the_row_pending_and_says_so(
    desk: Desk, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled between two attempts: no more tries, the row pending, a warning why."""
    (row,) = desk.queue("s1")
    desk.refusals = 5
    with anyio.CancelScope() as scope:
        desk.on_wait = scope.cancel
        await desk.outcomes().settle(hook(), row, Sent("h1"), "status s1 -> hook")
    assert scope.cancelled_caught
    assert (desk.refusals, desk.waits) == (4, [MARK_FIRST_WAIT])
    assert desk.row(row.id).status is OutboxStatus.PENDING
    assert desk.stats.delivered == 0
    assert any("stopping before" in r.getMessage() for r in caplog.records)
