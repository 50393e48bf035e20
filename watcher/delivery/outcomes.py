"""Outcomes: the one place that decides and records what became of a send.

For plain rows and card rows alike: delivered (marked, counted, logged),
retry later (backoff with jitter or the destination's Retry-After, by the one
retry policy in `watcher.core.retry`), or a dead letter (with a redacted
reason). A Retry-After also holds the target's whole lane. Every outcome is
counted in `DeliveryStats` and the metrics, and logged with its row's context.

A row the destination accepted is marked delivered even when the store is
busy or failing just then: the mark (for a card, the write of its ts with the
rows it carried) is tried again, with backoff, up to `MARK_ATTEMPTS` times
(the lane's progress beat goes on meanwhile), and the send never is. Only
if every attempt fails, or the daemon stops first, does the row stay
pending, to be sent again: the at-least-once case the delivery contract
allows for a send in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import anyio

from watcher.core.figures import failure_reason
from watcher.core.message import FailureKind, SendFailed, SendOutcome, Sent
from watcher.core.retry import GiveUp, decide_retry
from watcher.core.settings import Target
from watcher.core.text import describe_error
from watcher.delivery.hooks import StoreCall
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.ops.logs import context
from watcher.ops.metrics import Metrics
from watcher.store import DeliveryStore, OutboxRow, UnreadableRow

log = logging.getLogger("watcher.delivery")

MARK_FIRST_WAIT = 0.05  # seconds before the first retry of a failed mark; doubles each time
MARK_MOST_WAIT = 5.0  # the longest wait between two attempts
MARK_ATTEMPTS = 120  # ten minutes of waits between attempts (plus any busy lock waited out)


@dataclass
class DeliveryStats:
    """Counters for status lines and metrics."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    mark_retries: int = 0  # marks of sent rows tried again because the store refused one


def row_context(target: Target, row: OutboxRow, attempt: int | None = None) -> dict[str, Any]:
    """The log context of one outbox row's send."""
    return context(
        session=row.session_id,
        target=target.name,
        rule=row.rule,
        event_id=row.event.id,
        outbox_id=row.id,
        attempt=attempt,
    )


class Outcomes:
    """Records every send's outcome in the store, the stats, the metrics and the log.

    `hold(target_name, until)` is told when a destination asked to be left alone;
    `redact` masks every reason before it is logged or stored, since destinations
    can echo anything back, our own secrets included.
    """

    def __init__(
        self,
        store: DeliveryStore,
        *,
        db: StoreCall,
        clock: Callable[[], datetime],
        jitter: Callable[[], float],
        redact: Callable[[str], str],
        stats: DeliveryStats,
        metrics: Metrics,
        on_progress: Callable[[], None],
        hold: Callable[[str, datetime], None],
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._store = store
        self._db = db
        self._clock = clock
        self._jitter = jitter
        self._redact = redact
        self._stats = stats
        self._metrics = metrics
        self._on_progress = on_progress
        self._hold = hold
        self._sleep = sleep  # between attempts of a refused mark

    def redact(self, text: str) -> str:
        """`text` with every secret masked, fit to log or store."""
        return self._redact(text)

    async def settle(
        self, target: Target, row: OutboxRow, outcome: SendOutcome, where: str
    ) -> SendOutcome:
        """Record a plain row's send: delivered, or a failure to retry or bury.

        Returns the outcome as recorded (a failure's reason redacted).
        """
        now = self._clock()
        if isinstance(outcome, SendFailed):
            outcome = self._redacted(outcome)
        attempts = row.attempts + 1
        fields = row_context(target, row, attempts)
        if isinstance(outcome, Sent):
            failpoint(Failpoint.AFTER_SEND)
            await self._mark_delivered(row.id, now, outcome.handle, where)
            self._stats.delivered += 1
            self._metrics.notifications.labels(target.name, "sent").inc()
            log.info(
                "delivered %s (event %s, rule %s, attempt %d)",
                where,
                row.event.id,
                row.rule,
                attempts,
                extra=fields,
            )
        else:
            self._metrics.notification_failures.labels(target.name, failure_reason(outcome)).inc()
            await self._settle_failure(target, row, outcome, now, where, fields)
            self._hold_lane(target, outcome, now)
        self._on_progress()
        return outcome

    async def delivered(
        self, target: Target, rows: Sequence[OutboxRow], handle: str | None
    ) -> None:
        """Mark `rows` delivered (on the card `handle`, if any) and count them."""
        now = self._clock()
        for row in rows:
            where = f"{row.event.type} {row.session_id} -> {target.name} (card)"
            await self._mark_delivered(row.id, now, handle, where)
        self.count_delivered(target, rows, handle)

    async def _mark_delivered(
        self, row_id: int, now: datetime, handle: str | None, where: str
    ) -> None:
        """Mark a sent row delivered (see `record_sent`)."""
        what = f"{where} (outbox {row_id})"
        await self.record_sent(what, self._store.mark_delivered, row_id, now, handle)

    async def record_sent(self, where: str, write: Callable[..., object], *args: object) -> None:
        """Run `write(*args)`, the store write that records a send which happened (a row
        marked delivered, a card's ts stored with the rows it carried): tried again with
        backoff while the store refuses it, never the send; raises the last error after
        `MARK_ATTEMPTS`, and a stop meanwhile leaves the rows to be sent again.
        """
        wait = MARK_FIRST_WAIT
        failed = False
        try:
            for attempt in range(1, MARK_ATTEMPTS + 1):
                try:
                    await self._db(write, *args)
                except Exception as error:  # busy, locked, I/O: the send stands either way
                    reason = self._redact(describe_error(error))
                    if attempt == MARK_ATTEMPTS:
                        log.exception(
                            "gave up marking %s delivered after %d attempts: %s;"
                            " it will be sent again",
                            where,
                            attempt,
                            reason,
                        )
                        raise
                    if not failed:
                        log.warning(
                            "%s was sent, but marking it delivered failed: %s;"
                            " trying the mark again, not the send",
                            where,
                            reason,
                        )
                    failed = True
                    self._stats.mark_retries += 1
                    self._on_progress()  # waiting on the store is not a stalled lane
                    await self._sleep(wait)
                    wait = min(wait * 2, MARK_MOST_WAIT)
                    continue
                if failed:
                    log.info("marked %s delivered at attempt %d", where, attempt)
                return
        except anyio.get_cancelled_exc_class():
            if failed:
                log.warning(
                    "stopping before %s could be marked delivered:"
                    " it will be sent again after a restart",
                    where,
                )
            raise

    def count_delivered(
        self, target: Target, rows: Sequence[OutboxRow], handle: str | None
    ) -> None:
        """Count and log `rows` as delivered on the card `handle`, which the store
        already marked (with the card, in one transaction).
        """
        for row in rows:
            self._stats.delivered += 1
            self._metrics.notifications.labels(target.name, "sent").inc()
            log.info(
                "delivered %s %s -> %s on card %s (event %s, rule %s)",
                row.event.type,
                row.session_id,
                target.name,
                handle,
                row.event.id,
                row.rule,
                extra=row_context(target, row),
            )
        self._on_progress()

    async def failed(self, target: Target, rows: Sequence[OutboxRow], outcome: SendFailed) -> None:
        """One failed card call, for every row it carried: retry later or dead letter,
        each by its own attempts and age (the one retry policy decides).
        """
        outcome = self._redacted(outcome)
        now = self._clock()
        self._metrics.notification_failures.labels(target.name, failure_reason(outcome)).inc()
        for row in rows:
            where = f"{row.event.type} {row.session_id} -> {target.name} (card)"
            fields = row_context(target, row, row.attempts + 1)
            await self._settle_failure(target, row, outcome, now, where, fields)
        self._hold_lane(target, outcome, now)
        self._on_progress()

    async def bury(
        self, target: str, row_id: int, where: str, reason: str, error: BaseException | None
    ) -> SendOutcome:
        """Dead-letter a row that our own bug cannot render or send, logged once with the cause."""
        reason = self._redact(reason)
        await self._db(self._store.mark_dead, row_id, self._clock(), reason)
        self._stats.dead += 1
        outcome = SendFailed(FailureKind.PERMANENT, reason)
        self._metrics.notification_failures.labels(target, failure_reason(outcome)).inc()
        self._metrics.notifications.labels(target, "dead").inc()
        log.error("dead letter %s (outbox %d): %s", where, row_id, reason, exc_info=error)
        self._on_progress()
        return outcome

    async def bury_unreadable(self, target: Target, row: UnreadableRow) -> SendOutcome:
        """Dead-letter a row whose stored event cannot be read."""
        where = f"{row.event_type} {row.session_id or '-'} -> {target.name}"
        return await self.bury(target.name, row.id, where, row.reason, row.error)

    def _redacted(self, outcome: SendFailed) -> SendFailed:
        return replace(outcome, reason=self._redact(outcome.reason))

    async def _settle_failure(
        self,
        target: Target,
        row: OutboxRow,
        outcome: SendFailed,
        now: datetime,
        where: str,
        fields: Mapping[str, Any],
    ) -> None:
        """The one retry policy decides a failed row's fate: retry later, or dead letter."""
        decision = decide_retry(
            outcome,
            attempts=row.attempts + 1,
            created_at=row.created_at,
            now=now,
            limits=target.limits,
            jitter=self._jitter(),
        )
        if isinstance(decision, GiveUp):
            await self._db(self._store.mark_dead, row.id, now, decision.reason)
            self._stats.dead += 1
            self._metrics.notifications.labels(target.name, "dead").inc()
            log.error(
                "dead letter %s (outbox %d): %s", where, row.id, decision.reason, extra=fields
            )
            return
        await self._db(self._store.mark_retry, row.id, decision.at, outcome.reason)
        self._stats.retried += 1
        self._metrics.notifications.labels(target.name, "retried").inc()
        log.warning(
            "retrying %s at %s: %s",
            where,
            decision.at.isoformat(timespec="seconds"),
            decision.reason,
            extra=fields,
        )

    def _hold_lane(self, target: Target, outcome: SendFailed, now: datetime) -> None:
        """A rate limit applies to the whole destination, not just the row that met it."""
        if outcome.retry_after is not None:
            self._hold(target.name, now + outcome.retry_after)
