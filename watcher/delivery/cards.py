"""Live Slack cards: one message per session, kept up to date in place.

Owns the card protocol: which rows go to a card (`keeps_card`), what a
notifier must do to keep one (`CardNotifier`), and `CardKeeper`, which folds
a session's pending rows into one update, posts a new card crash-safely (the
intent and its marker are stored before the post, so a post that reached
Slack before a crash is found again instead of posted twice), replaces a card
Slack will not update, and adds one thread reply per row. Every Slack call
takes its turn in the channel's pacing; every outcome is recorded by
`Outcomes`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol, runtime_checkable

import anyio

from watcher.core.card import CardRenderer, EarlierCard
from watcher.core.message import FailureKind, SendFailed, SendOutcome, Sent, SlackMessage
from watcher.core.model import Event, EventType
from watcher.core.settings import SlackTarget, Target
from watcher.core.text import describe_error
from watcher.delivery.hooks import Enrich, StoreCall, enriched
from watcher.delivery.outcomes import Outcomes
from watcher.notifiers.base import Notifier
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.ops.metrics import Metrics
from watcher.store import Card, DeliveryStore, OutboxRow, UnreadableRow

log = logging.getLogger("watcher.delivery")

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


def builtin_cards(_target: Target) -> CardRenderer:
    """The built-in card look, whatever the target."""
    return CardRenderer()


def _not_posted(outcome: SendFailed) -> bool:
    """Slack answered and refused: the message cannot have been posted."""
    status = outcome.details.get("status")
    return "error" in outcome.details or (isinstance(status, int) and 400 <= status < 500)


def _card_gone(outcome: SendFailed) -> bool:
    """A refused update that no retry can fix: the card must be replaced."""
    return bool(outcome.details.get("card_gone"))


def _marker() -> str:
    """A card's marker in Slack metadata: unique, and no secret."""
    return uuid.uuid4().hex


def _earlier(card: Card) -> EarlierCard | None:
    """The card `card` replaces, as the new card links it (None: it replaces none)."""
    if card.replaced_ts is None:
        return None
    return EarlierCard(card.replaced_ts, card.replaced_url, card.replaced_reason or "")


class CardKeeper:
    """Keeps each session's live card on card targets up to date."""

    def __init__(
        self,
        store: DeliveryStore,
        *,
        db: StoreCall,
        clock: Callable[[], datetime],
        pace: Callable[[Target], AbstractAsyncContextManager[None]],
        outcomes: Outcomes,
        metrics: Metrics,
        cards: Callable[[Target], CardRenderer],
        enrich: Enrich | None,
    ) -> None:
        self._store = store
        self._db = db
        self._clock = clock
        self._pace = pace
        self._outcomes = outcomes
        self._metrics = metrics
        # How each target's cards look (the daemon's follows the target's templates).
        self._cards_for = cards
        self._enrich = enrich

    async def attempt(
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
                    await self._outcomes.bury_unreadable(target, row)
                    return [row.id]
                break
            rows.append(row)
        if not rows or rows[0].id != head.id:
            rows = [head]  # the lane moved on meanwhile; the head alone is still due
        if self._enrich is not None:
            # The card shows the latest state, so only the latest row needs its extras.
            latest = rows[-1]
            where = f"{latest.event.type} {session_id} -> {target.name}"
            event = await enriched(self._enrich, latest.event, latest.rule, where)
            rows[-1] = replace(latest, event=event)
        try:
            return await self._update(target, notifier, session_id, rows)
        except Exception as error:  # our own bug in one card must not kill the lane
            where = f"card {session_id} -> {target.name}"
            still = await self._db(self._store.pending_lane, target.name, session_id, CARD_BACKLOG)
            pending = {row.id for row in still}
            for row in rows:
                if row.id in pending:  # rows delivered before the error stay delivered
                    await self._outcomes.bury(
                        target.name, row.id, where, f"card error: {describe_error(error)}", error
                    )
            return [row.id for row in rows]

    async def _update(
        self, target: Target, notifier: CardNotifier, session_id: str, rows: list[OutboxRow]
    ) -> list[int]:
        ids = [row.id for row in rows]
        latest = rows[-1]
        card = await self._db(self._store.card, target.name, session_id)
        if card is not None and card.channel != notifier.channel:
            card = None  # the target moved to another channel: a new card there
        if card is not None and card.ts is None and card.posting_since is not None:
            found = await self._find(target, notifier, card, rows)
            if found is False:
                return ids
            if isinstance(found, str):
                card = replace(card, ts=found, posting_since=None)
                await self._record(target, session_id, found, [])
                self._count_call(target, "found")
                log.info("card of %s -> %s found again after a restart", session_id, target.name)
        if card is not None and card.ts is not None:
            message = await self._render(target, latest.event, latest.rule, card)
            async with self._pace(target):
                outcome = await notifier.update(card.channel, card.ts, message, now=self._clock())
            if isinstance(outcome, Sent):
                self._count_call(target, "update")
                await self._thread(target, notifier, session_id, card.ts, rows)
                return ids
            if not _card_gone(outcome):
                await self._outcomes.failed(target, rows, outcome)
                return ids
            # Deleted, too old or too long: a new card, linking the old one if Slack can.
            self._count_call(target, "replaced")
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
        await self._post(target, notifier, fresh, rows)
        return ids

    async def _find(
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
            await self._outcomes.failed(target, rows, found)
            return False
        # Without the history scope a lost post cannot be found: post again (and say so),
        # since a duplicate card is better than notifications that never arrive.
        log.warning(
            "card of %s -> %s: cannot look up a post that may have reached Slack (%s);"
            " posting again",
            card.session_id,
            target.name,
            self._outcomes.redact(found.reason),
        )
        return None

    async def _render(self, target: Target, event: Event, rule: str, card: Card) -> SlackMessage:
        """The card for `event`; one that may run a template renders in a worker thread."""
        renderer = self._cards_for(target)
        render = partial(renderer.card, event, rule, _earlier(card))
        if renderer.offload:
            return await anyio.to_thread.run_sync(render)
        return render()

    async def _post(
        self, target: Target, notifier: CardNotifier, card: Card, rows: list[OutboxRow]
    ) -> None:
        """Post `card` new, its intent and marker stored first (a crash finds it again)."""
        latest = rows[-1]
        message = await self._render(target, latest.event, latest.rule, card)
        now = self._clock()
        await self._db(self._store.intend_card, card, now)
        async with self._pace(target):
            outcome = await notifier.post(message, now=self._clock(), marker=card.marker)
        if isinstance(outcome, SendFailed):
            if _not_posted(outcome):
                await self._db(self._store.drop_card_intent, target.name, card.session_id, now)
            await self._outcomes.failed(target, rows, outcome)
            return
        self._count_call(target, "post")
        if outcome.handle is None:
            # Accepted without a ts: nothing to update later. Keep the intent, so the
            # next notification finds the card by its marker, and count these as sent.
            await self._outcomes.delivered(target, rows, None)
            return
        failpoint(Failpoint.AFTER_CARD_POST)
        if len(rows) == 1:
            await self._record(target, card.session_id, outcome.handle, rows)
            self._outcomes.count_delivered(target, rows, outcome.handle)
            return
        await self._record(target, card.session_id, outcome.handle, [])
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
            await self._record(target, session_id, ts, rows)
            self._outcomes.count_delivered(target, rows, ts)
            return
        for i, row in enumerate(rows):
            reply = self._cards_for(target).reply(row.event, row.rule)
            async with self._pace(target):
                outcome = await notifier.post(reply, now=self._clock(), thread_ts=ts)
            if isinstance(outcome, SendFailed):
                if outcome.kind is FailureKind.RETRYABLE:
                    await self._outcomes.failed(target, rows[i:], outcome)  # the rest waits
                    return
                await self._outcomes.failed(target, [row], outcome)  # dead; the rest goes on
                continue
            self._count_call(target, "reply")
            await self._record(target, session_id, ts, [row])
            self._outcomes.count_delivered(target, [row], ts)

    async def _record(
        self, target: Target, session_id: str, ts: str, rows: Sequence[OutboxRow]
    ) -> None:
        """Store the card's `ts` and mark `rows` delivered on it, after the Slack call that
        made it so: a store that refuses the write meanwhile gets it again, never Slack.
        """
        ids = [row.id for row in rows]
        where = f"card {session_id} -> {target.name} (outbox {', '.join(map(str, ids)) or '-'})"
        write = self._store.record_card
        await self._outcomes.record_sent(
            where, write, target.name, session_id, ts, ids, self._clock()
        )

    def _count_call(self, target: Target, call: str) -> None:
        self._metrics.card_calls.labels(target.name, call).inc()
