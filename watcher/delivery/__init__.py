"""The outbox worker: sends pending notifications, owns retries, backoff and dead letters.

One lane per target, each in the worker's task group, so a failing or slow
target never delays another. Within a lane, only the oldest pending row of
each session is eligible, so one session's notifications reach a target in
the order the transitions happened. Those eligible rows belong to different
sessions, so a webhook target without pacing gets them concurrently (a burst
of a thousand drains in round trips of `BATCH`, not one by one); Slack
targets, and paced ones, get them one at a time.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import anyio
from anyio.abc import TaskGroup

from watcher.core.card import CardRenderer, EarlierCard
from watcher.core.figures import failure_reason
from watcher.core.message import FailureKind, Message, SendFailed, SendOutcome, Sent, SlackMessage
from watcher.core.model import Event, EventType
from watcher.core.render import render_for
from watcher.core.retry import GiveUp, decide_retry
from watcher.core.settings import SlackTarget, Target, TargetKind
from watcher.core.text import describe_error
from watcher.notifiers.base import Notifier
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.ops.logs import context
from watcher.ops.metrics import Metrics
from watcher.store import Card, OutboxRow, Store, UnreadableRow

log = logging.getLogger("watcher.delivery")

P = ParamSpec("P")
R = TypeVar("R")

BATCH = 32
IDLE_WAKE = timedelta(seconds=10)  # also the idle lanes' heartbeat period
LANE_PAUSE = timedelta(seconds=1)  # after an unexpected error (the store's), before going on

Render = Callable[[Target, Event, str], Message]
"""Makes the message for (target, event, rule name); the daemon's consults templates."""
Enrich = Callable[[Event, str], Awaitable[Event]]
"""Adds send-time data to an event (e.g. `last_answer`); it must return promptly."""


def render_builtin(target: Target, event: Event, rule: str) -> Message:
    """The built-in rendering for the target's kind (no templates)."""
    return render_for(target.kind, event, rule)


CARD_BACKLOG = 50  # pending rows of one session folded into one card update
# A card posted just before a crash is looked up in the history from a little before
# the post began: Slack's clock and ours may disagree by that much.
CARD_LOOKUP_MARGIN = timedelta(minutes=5)


@runtime_checkable
class CardNotifier(Protocol):
    """A notifier that can keep a live card: post (with a marker, in a thread), update in
    place, find a marked post again, and link to a message (`SlackNotifier`).
    """

    target_name: str

    @property
    def channel(self) -> str: ...

    async def post(
        self,
        message: SlackMessage,
        *,
        now: datetime,
        thread_ts: str | None = None,
        marker: str | None = None,
    ) -> SendOutcome: ...

    async def update(
        self, channel: str, ts: str, message: SlackMessage, *, now: datetime
    ) -> SendOutcome: ...

    async def find_card(
        self, marker: str, oldest: datetime, *, now: datetime
    ) -> str | SendFailed | None: ...

    async def permalink(self, ts: str, *, now: datetime) -> str | None: ...


def keeps_card(target: Target, notifier: Notifier, row: OutboxRow | UnreadableRow) -> bool:
    """Whether `row` goes to the session's live card rather than as a message of its own:
    a Slack bot target with `card` on, and an event of a session (not a digest).
    """
    return (
        isinstance(target, SlackTarget)
        and target.card
        and isinstance(notifier, CardNotifier)
        and isinstance(row, OutboxRow)
        and row.event.session is not None
        and row.event.type is not EventType.DIGEST
    )


def _not_posted(outcome: SendFailed) -> bool:
    """Slack answered and refused: the message cannot have been posted."""
    status = outcome.details.get("status")
    return "error" in outcome.details or (isinstance(status, int) and 400 <= status < 500)


def _card_gone(outcome: SendFailed) -> bool:
    """A refused update that no retry can fix: the card must be replaced."""
    return bool(outcome.details.get("card_gone"))


@dataclass
class _Lane:
    target: Target
    notifier: Notifier
    wake: anyio.Event = field(default_factory=anyio.Event)
    stopping: bool = False
    not_before: datetime | None = None
    predecessor: _Lane | None = None
    accepting: bool = False  # the target accepted the last row sent (concurrency allowed)
    stopped: anyio.Event = field(default_factory=anyio.Event)

    def poke(self) -> None:
        self.wake.set()

    def should_stop(self) -> bool:
        # A method, not the attribute, so checks after an await are not narrowed away.
        return self.stopping


def _builtin_cards(_target: Target) -> CardRenderer:
    return CardRenderer()


def _row_context(target: Target, row: OutboxRow, attempt: int | None = None) -> dict[str, Any]:
    """The log context of one outbox row's send."""
    return context(
        session=row.session_id,
        target=target.name,
        rule=row.rule,
        event_id=row.event.id,
        outbox_id=row.id,
        attempt=attempt,
    )


def sends_together(target: Target) -> bool:
    """Whether rows of different sessions may go to `target` at the same time: only
    to a webhook without pacing. Slack channels get one message at a time, in order,
    paced or not.
    """
    return target.kind is TargetKind.WEBHOOK and target.min_interval <= timedelta(0)


def pacing_key(target: Target) -> str:
    """Targets that share a rate limit share a key: Slack limits posts per channel."""
    if isinstance(target, SlackTarget):
        return f"slack:{target.api_url or ''}:{target.channel}"
    return f"{target.kind}:{target.name}"


class Pacer:
    """Spaces sends per key (monotonic time): a send starts `gap` seconds after the
    previous one with the same key ended, so the destination sees the gap too,
    however long the previous request took to arrive.
    """

    def __init__(
        self,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    @asynccontextmanager
    async def turn(self, key: str, gap: float) -> AsyncIterator[None]:
        """Wait for `key`'s next slot, hold it for the send, and space the next one."""
        if gap <= 0:
            yield
            return
        now = self._clock()
        # A fresh process cannot know when the previous one last sent (a restart
        # takes well under a second), so its first send waits one gap too.
        slot = max(now, self._next.get(key, now + gap))
        self._next[key] = slot + gap  # concurrent senders queue behind this slot
        if slot > now:
            await self._sleep(slot - now)
        try:
            yield
        finally:
            self._next[key] = max(self._next[key], self._clock() + gap)


@dataclass
class DeliveryStats:
    """Counters for status lines and metrics."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


class DeliveryWorker:
    """Sends outbox rows through notifiers; the single place that decides on retries."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
        db: Callable[..., Awaitable[Any]] | None = None,
        on_progress: Callable[[], None] | None = None,
        redact: Callable[[str], str] = lambda text: text,
        render: Render = render_builtin,
        metrics: Metrics | None = None,
        enrich: Enrich | None = None,
        cards: Callable[[Target], CardRenderer] | None = None,
    ) -> None:
        self._store = store
        self._render = render
        self._enrich = enrich
        # How each target's cards look (the daemon's follows the target's templates).
        self._cards_for = cards or _builtin_cards
        self._clock = clock
        self._jitter = jitter
        self._db = db or _run_inline
        self._lanes: dict[str, _Lane] = {}
        self._pacer = Pacer()
        self._stop_requested = anyio.Event()
        self._tg: TaskGroup | None = None
        self._on_progress = on_progress or (lambda: None)
        # Destinations can echo anything back, our own secrets included: every
        # reason is masked before it is logged or stored.
        self._redact = redact
        self.stats = DeliveryStats()
        self.metrics = metrics or Metrics()

    # --- lifecycle -----------------------------------------------------------------

    async def run(self, targets: Mapping[str, Target], notifiers: Mapping[str, Notifier]) -> None:
        """Serve lanes for `targets` until `stop()`; returns when every lane has finished."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._keep_alive)
            self.set_targets(targets, notifiers)
        self._tg = None

    async def _keep_alive(self) -> None:
        # Holds the task group open for targets a reload may add, and reports
        # progress while there is no lane to do it.
        while not self._stop_requested.is_set():
            if not self._lanes:
                self._on_progress()
            with anyio.move_on_after(IDLE_WAKE.total_seconds()):
                await self._stop_requested.wait()

    def set_targets(self, targets: Mapping[str, Target], notifiers: Mapping[str, Notifier]) -> None:
        """Start lanes for new or changed targets and stop lanes of removed ones."""
        assert self._tg is not None, "set_targets() is only valid while run() is running"
        retired: dict[str, _Lane] = {}
        for name, lane in list(self._lanes.items()):
            if targets.get(name) != lane.target or notifiers.get(name) is not lane.notifier:
                lane.stopping = True
                lane.poke()
                retired[name] = self._lanes.pop(name)
        for name, target in targets.items():
            if name not in self._lanes:
                # The new lane starts once the old one has finished its send, so
                # one row is never in flight twice.
                lane = _Lane(target, notifiers[name], predecessor=retired.get(name))
                self._lanes[name] = lane
                self._tg.start_soon(self._serve, lane, name=f"lane:{name}")

    def stop(self) -> None:
        """Ask every lane to finish its current send and stop; pending rows stay queued."""
        self._stop_requested.set()
        for lane in self._lanes.values():
            lane.stopping = True
            lane.poke()

    def wake(self, targets: Collection[str] | None = None) -> None:
        """Tell lanes that new rows may be due (all lanes when `targets` is None)."""
        for name, lane in self._lanes.items():
            if targets is None or name in targets:
                lane.poke()

    # --- sending -------------------------------------------------------------------

    async def _serve(self, lane: _Lane) -> None:
        if lane.predecessor is not None:
            await lane.predecessor.stopped.wait()
            lane.predecessor = None
        try:
            while not lane.should_stop():
                try:
                    await self._serve_once(lane)
                except Exception:  # no error, not even the store's, may end a lane
                    log.exception("lane %s: unexpected error; going on", lane.target.name)
                    await self._sleep_until(lane, self._clock() + LANE_PAUSE)
        finally:
            lane.stopped.set()

    async def _serve_once(self, lane: _Lane) -> None:
        """Send one batch of due rows, or sleep until the next one is due."""
        name = lane.target.name
        self._on_progress()
        now = self._clock()
        if lane.not_before is not None and lane.not_before > now:
            await self._sleep_until(lane, lane.not_before)
            return
        rows = await self._db(self._store.due, name, now, BATCH)
        if not rows:
            next_due = await self._db(self._store.next_due, name)
            await self._sleep_until(lane, next_due or now + IDLE_WAKE)
            return
        if sends_together(lane.target):
            await self._send_together(lane, rows)
        else:
            await self._send_in_turn(lane, rows)

    async def _send_in_turn(self, lane: _Lane, rows: list[OutboxRow | UnreadableRow]) -> None:
        """A paced target: one row after another, each in its pacing slot."""
        for row in rows:
            if lane.should_stop():
                break
            if keeps_card(lane.target, lane.notifier, row):
                await self.attempt_card(lane.target, lane.notifier, row)
            else:
                async with self._pace(lane.target):
                    await self.attempt(lane.target, lane.notifier, row)
            if lane.not_before is not None and lane.not_before > self._clock():
                break

    async def _send_together(self, lane: _Lane, rows: list[OutboxRow | UnreadableRow]) -> None:
        """An unpaced target: the rows at once. `due` returns at most one row per
        session, so this never reorders one session's notifications.

        Until the target has just accepted a row (at start, after any failure),
        one row goes alone first, so a target that is down or rate-limiting sees
        one request, not a batch, and its Retry-After holds back the rest.
        """
        if not lane.accepting:
            if not await self._attempt_in(lane, rows[0]):
                return
            rows = rows[1:]
        async with anyio.create_task_group() as tg:
            for row in rows:
                if lane.should_stop() or not lane.accepting:
                    break
                tg.start_soon(self._attempt_in, lane, row)

    async def _attempt_in(self, lane: _Lane, row: OutboxRow | UnreadableRow) -> bool:
        """`attempt` on behalf of `lane`, noting whether its target accepted the row."""
        outcome = await self.attempt(lane.target, lane.notifier, row)
        lane.accepting = isinstance(outcome, Sent)
        return lane.accepting

    async def _sleep_until(self, lane: _Lane, when: datetime) -> None:
        delay = (when - self._clock()).total_seconds()
        delay = min(max(delay, 0.0), IDLE_WAKE.total_seconds())
        if delay > 0:
            with anyio.move_on_after(delay):
                await lane.wake.wait()
        if lane.wake.is_set():
            lane.wake = anyio.Event()

    def _pace(self, target: Target) -> AbstractAsyncContextManager[None]:
        return self._pacer.turn(pacing_key(target), target.min_interval.total_seconds())

    async def _bury(
        self, target: str, row_id: int, where: str, reason: str, error: BaseException | None
    ) -> SendOutcome:
        """Dead-letter a row that our own bug cannot render or send, logged once with the cause."""
        reason = self._redact(reason)
        await self._db(self._store.mark_dead, row_id, self._clock(), reason)
        self.stats.dead += 1
        outcome = SendFailed(FailureKind.PERMANENT, reason)
        self.metrics.notification_failures.labels(target, failure_reason(outcome)).inc()
        self.metrics.notifications.labels(target, "dead").inc()
        log.error("dead letter %s (outbox %d): %s", where, row_id, reason, exc_info=error)
        self._on_progress()
        return outcome

    async def _enriched(self, event: Event, rule: str, where: str) -> Event:
        """`event` with its send-time data; as it was if adding it fails (never fatal)."""
        assert self._enrich is not None
        try:
            return await self._enrich(event, rule)
        except Exception as error:
            log.warning("sending %s without its extra data: %s", where, describe_error(error))
            return event

    async def attempt(
        self, target: Target, notifier: Notifier, row: OutboxRow | UnreadableRow
    ) -> SendOutcome:
        """Send one row and record the outcome: delivered, retry later, or dead letter.

        A row that cannot be read, rendered or sent because of a bug on our side
        (any exception from decoding, rendering, signing or a notifier) becomes a
        dead letter with the exception as its reason; the lane goes on.
        """
        if isinstance(row, UnreadableRow):
            where = f"{row.event_type} {row.session_id or '-'} -> {target.name}"
            return await self._bury(target.name, row.id, where, row.reason, row.error)
        event = row.event
        where = f"{event.type} {event.session.id if event.session else '-'} -> {target.name}"
        if self._enrich is not None:
            event = await self._enriched(event, row.rule, where)
        try:
            message = self._render(target, event, row.rule)
        except Exception as error:
            return await self._bury(
                target.name, row.id, where, f"cannot render: {describe_error(error)}", error
            )
        try:
            outcome = await notifier.send(message, now=self._clock())
        except Exception as error:  # a notifier bug must not kill the lane
            return await self._bury(
                target.name, row.id, where, f"notifier error: {describe_error(error)}", error
            )
        now = self._clock()
        if isinstance(outcome, SendFailed):
            outcome = replace(outcome, reason=self._redact(outcome.reason))
        attempts = row.attempts + 1
        fields = _row_context(target, row, attempts)
        if isinstance(outcome, Sent):
            failpoint(Failpoint.AFTER_SEND)
            await self._db(self._store.mark_delivered, row.id, now, outcome.handle)
            self.stats.delivered += 1
            self.metrics.notifications.labels(target.name, "sent").inc()
            log.info(
                "delivered %s (event %s, rule %s, attempt %d)",
                where,
                event.id,
                row.rule,
                attempts,
                extra=fields,
            )
        else:
            self.metrics.notification_failures.labels(target.name, failure_reason(outcome)).inc()
            await self._settle_failure(target, row, outcome, now, where, fields)
            self._hold_lane(target, outcome, now)
        self._on_progress()
        return outcome

    async def drain_once(
        self, targets: Mapping[str, Target], notifiers: Mapping[str, Notifier]
    ) -> int:
        """Send every row due now, once, target by target (the `once` command)."""
        attempted = 0
        for name, target in targets.items():
            seen: set[int] = set()
            while True:
                rows = [
                    r
                    for r in await self._db(self._store.due, name, self._clock(), BATCH)
                    if r.id not in seen
                ]
                if not rows:
                    break
                for row in rows:
                    seen.add(row.id)
                    if keeps_card(target, notifiers[name], row):
                        folded = await self.attempt_card(target, notifiers[name], row)
                        seen.update(folded)
                        attempted += len(folded)
                        continue
                    async with self._pace(target):
                        await self.attempt(target, notifiers[name], row)
                    attempted += 1
        return attempted

    # --- live cards ----------------------------------------------------------------

    async def attempt_card(
        self, target: Target, notifier: Notifier, head: OutboxRow | UnreadableRow
    ) -> list[int]:
        """Bring the session's card up to date with every pending row of `head`'s session.

        The first notification of a session posts its card; later ones update it
        in place (the latest state wins, however many are queued) and add one
        line each to its thread. Every Slack call takes its turn in the channel's
        pacing. Returns the ids of the rows this attempt covered (delivered,
        retried or dead).
        """
        assert isinstance(notifier, CardNotifier)
        assert isinstance(head, OutboxRow)
        assert head.event.session is not None
        session_id = head.event.session.id
        backlog = await self._db(self._store.pending_lane, target.name, session_id, CARD_BACKLOG)
        rows: list[OutboxRow] = []
        for row in backlog:
            if isinstance(row, UnreadableRow):
                # Only what comes before the unreadable row can go now: order is kept.
                if not rows:
                    await self.attempt(target, notifier, row)
                    return [row.id]
                break
            rows.append(row)
        if not rows or rows[0].id != head.id:
            rows = [head]  # the lane moved on meanwhile; the head alone is still due
        if self._enrich is not None:
            # The card shows the latest state, so only the latest row needs its extras.
            latest = rows[-1]
            where = f"{latest.event.type} {session_id} -> {target.name}"
            event = await self._enriched(latest.event, latest.rule, where)
            rows[-1] = replace(latest, event=event)
        try:
            return await self._update_card(target, notifier, session_id, rows)
        except Exception as error:  # our own bug in one card must not kill the lane
            where = f"card {session_id} -> {target.name}"
            still = await self._db(self._store.pending_lane, target.name, session_id, CARD_BACKLOG)
            pending = {row.id for row in still}
            for row in rows:
                if row.id in pending:  # rows delivered before the error stay delivered
                    await self._bury(
                        target.name, row.id, where, f"card error: {describe_error(error)}", error
                    )
            return [row.id for row in rows]

    async def _update_card(
        self, target: Target, notifier: CardNotifier, session_id: str, rows: list[OutboxRow]
    ) -> list[int]:
        ids = [row.id for row in rows]
        latest = rows[-1]
        card = await self._db(self._store.card, target.name, session_id)
        if card is not None and card.channel != notifier.channel:
            card = None  # the target moved to another channel: a new card there
        if card is not None and card.ts is None and card.posting_since is not None:
            found = await self._find_card(target, notifier, card, rows)
            if found is False:
                return ids
            if isinstance(found, str):
                card = replace(card, ts=found, posting_since=None)
                await self._db(
                    self._store.record_card, target.name, session_id, found, [], self._clock()
                )
                self._count_card(target, "found")
                log.info("card of %s -> %s found again after a restart", session_id, target.name)
        if card is not None and card.ts is not None:
            message = self._cards_for(target).card(latest.event, latest.rule, self._earlier(card))
            async with self._pace(target):
                outcome = await notifier.update(card.channel, card.ts, message, now=self._clock())
            if isinstance(outcome, Sent):
                self._count_card(target, "update")
                await self._thread(target, notifier, session_id, card.ts, rows)
                return ids
            outcome = replace(outcome, reason=self._redact(outcome.reason))
            if not _card_gone(outcome):
                await self._fail(target, rows, outcome)
                return ids
            # Deleted, too old or too long: a new card, linking the old one if Slack can.
            self._count_card(target, "replaced")
            async with self._pace(target):
                url = await notifier.permalink(card.ts, now=self._clock())
            error = str(outcome.details.get("error"))
            log.warning(
                "card of %s -> %s cannot be updated (%s); posting a new one",
                session_id,
                target.name,
                error,
            )
            replaced: tuple[str | None, str | None, str | None] = (card.ts, error, url)
        elif card is None:
            replaced = (None, None, None)
        else:  # a post that never got its ts: the new one still names any card it replaces
            replaced = (card.replaced_ts, card.replaced_reason, card.replaced_url)
        fresh = Card(
            target.name,
            session_id,
            notifier.channel,
            None,
            _marker(),
            replaced_ts=replaced[0],
            replaced_reason=replaced[1],
            replaced_url=replaced[2],
        )
        await self._post_card(target, notifier, fresh, self._earlier(fresh), rows)
        return ids

    @staticmethod
    def _earlier(card: Card) -> EarlierCard | None:
        if card.replaced_ts is None:
            return None
        return EarlierCard(card.replaced_ts, card.replaced_url, card.replaced_reason or "")

    async def _find_card(
        self, target: Target, notifier: CardNotifier, card: Card, rows: list[OutboxRow]
    ) -> str | bool | None:
        """Look up a card whose post may have reached Slack before we crashed.

        Returns its `ts`, None if it is not there, or False when the lookup failed
        and the rows were scheduled again.
        """
        assert card.posting_since is not None
        oldest = card.posting_since - CARD_LOOKUP_MARGIN
        async with self._pace(target):
            found = await notifier.find_card(card.marker, oldest, now=self._clock())
        if not isinstance(found, SendFailed):
            return found
        if found.kind is FailureKind.RETRYABLE:
            await self._fail(target, rows, replace(found, reason=self._redact(found.reason)))
            return False
        # Without the history scope a lost post cannot be found: post again (and say so),
        # since a duplicate card is better than notifications that never arrive.
        log.warning(
            "card of %s -> %s: cannot look up a post that may have reached Slack (%s);"
            " posting again",
            card.session_id,
            target.name,
            self._redact(found.reason),
        )
        return None

    async def _post_card(
        self,
        target: Target,
        notifier: CardNotifier,
        card: Card,
        earlier: EarlierCard | None,
        rows: list[OutboxRow],
    ) -> None:
        latest = rows[-1]
        message = self._cards_for(target).card(latest.event, latest.rule, earlier)
        now = self._clock()
        await self._db(self._store.intend_card, card, now)
        async with self._pace(target):
            outcome = await notifier.post(message, now=self._clock(), marker=card.marker)
        if isinstance(outcome, SendFailed):
            outcome = replace(outcome, reason=self._redact(outcome.reason))
            if _not_posted(outcome):
                await self._db(self._store.drop_card_intent, target.name, card.session_id, now)
            await self._fail(target, rows, outcome)
            return
        self._count_card(target, "post")
        if outcome.handle is None:
            # Accepted without a ts: nothing to update later. Keep the intent, so the
            # next notification finds the card by its marker, and count these as sent.
            await self._delivered(target, rows, None)
            return
        failpoint(Failpoint.AFTER_CARD_POST)
        if len(rows) == 1:
            await self._db(
                self._store.record_card,
                target.name,
                card.session_id,
                outcome.handle,
                [rows[0].id],
                self._clock(),
            )
            self._count_delivered(target, rows, outcome.handle)
            return
        await self._db(
            self._store.record_card, target.name, card.session_id, outcome.handle, [], self._clock()
        )
        await self._thread(target, notifier, card.session_id, outcome.handle, rows)

    async def _thread(
        self,
        target: Target,
        notifier: CardNotifier,
        session_id: str,
        ts: str,
        rows: list[OutboxRow],
    ) -> None:
        """The card shows the latest state; now each row adds its line to the thread and
        is delivered with it (a crash re-sends at most the line in flight).
        """
        threaded = isinstance(target, SlackTarget) and target.thread
        if not threaded:
            await self._db(
                self._store.record_card,
                target.name,
                session_id,
                ts,
                [r.id for r in rows],
                self._clock(),
            )
            self._count_delivered(target, rows, ts)
            return
        for i, row in enumerate(rows):
            reply = self._cards_for(target).reply(row.event, row.rule)
            async with self._pace(target):
                outcome = await notifier.post(reply, now=self._clock(), thread_ts=ts)
            if isinstance(outcome, SendFailed):
                outcome = replace(outcome, reason=self._redact(outcome.reason))
                if outcome.kind is FailureKind.RETRYABLE:
                    await self._fail(target, rows[i:], outcome)  # the rest waits, in order
                    return
                await self._fail(target, [row], outcome)  # a dead letter; the rest goes on
                continue
            self._count_card(target, "reply")
            await self._db(
                self._store.record_card, target.name, session_id, ts, [row.id], self._clock()
            )
            self._count_delivered(target, [row], ts)

    async def _delivered(self, target: Target, rows: list[OutboxRow], handle: str | None) -> None:
        now = self._clock()
        for row in rows:
            await self._db(self._store.mark_delivered, row.id, now, handle)
        self._count_delivered(target, rows, handle)

    def _count_card(self, target: Target, call: str) -> None:
        self.metrics.card_calls.labels(target.name, call).inc()

    def _count_delivered(self, target: Target, rows: list[OutboxRow], handle: str | None) -> None:
        for row in rows:
            self.stats.delivered += 1
            self.metrics.notifications.labels(target.name, "sent").inc()
            log.info(
                "delivered %s %s -> %s on card %s (event %s, rule %s)",
                row.event.type,
                row.session_id,
                target.name,
                handle,
                row.event.id,
                row.rule,
                extra=_row_context(target, row),
            )
        self._on_progress()

    async def _fail(self, target: Target, rows: list[OutboxRow], outcome: SendFailed) -> None:
        """One failed card call, for every row it carried: retry later or dead letter,
        each by its own attempts and age (the one retry policy decides).
        """
        now = self._clock()
        self.metrics.notification_failures.labels(target.name, failure_reason(outcome)).inc()
        for row in rows:
            where = f"{row.event.type} {row.session_id} -> {target.name} (card)"
            fields = _row_context(target, row, row.attempts + 1)
            await self._settle_failure(target, row, outcome, now, where, fields)
        self._hold_lane(target, outcome, now)
        self._on_progress()

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
            self.stats.dead += 1
            self.metrics.notifications.labels(target.name, "dead").inc()
            log.error(
                "dead letter %s (outbox %d): %s", where, row.id, decision.reason, extra=fields
            )
            return
        await self._db(self._store.mark_retry, row.id, decision.at, outcome.reason)
        self.stats.retried += 1
        self.metrics.notifications.labels(target.name, "retried").inc()
        log.warning(
            "retrying %s at %s: %s",
            where,
            decision.at.isoformat(timespec="seconds"),
            decision.reason,
            extra=fields,
        )

    def _hold_lane(self, target: Target, outcome: SendFailed, now: datetime) -> None:
        """A rate limit applies to the whole destination, not just the row that met it."""
        if outcome.retry_after is None:
            return
        lane = self._lanes.get(target.name)
        if lane is not None:
            lane.not_before = now + outcome.retry_after


def _marker() -> str:
    """A card's marker in Slack metadata: unique, and no secret."""
    return uuid.uuid4().hex


async def _run_inline(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    return fn(*args, **kwargs)
