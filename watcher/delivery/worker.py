"""The outbox worker: its lifecycle, and the one dispatch every due row goes through.

`DeliveryWorker` wires the parts (lanes, pacing, outcomes, cards) around one
store, runs a lane per target until stopped, and sends each due row by
`dispatch`: to the session's live card, or as a message of its own in its
target's pacing slot. It is the single place that decides on retries, through
`Outcomes`.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskGroup

from watcher.core.card import CardRenderer
from watcher.core.message import SendOutcome, Sent
from watcher.core.settings import Target
from watcher.core.text import describe_error
from watcher.delivery.cards import CardKeeper, builtin_cards, keeps_card
from watcher.delivery.hooks import (
    Enrich,
    Render,
    SendGate,
    StoreCall,
    enriched,
    render_builtin,
    run_inline,
)
from watcher.delivery.lanes import BATCH, IDLE_WAKE, Dispatched, Lanes, LaneWork
from watcher.delivery.outcomes import DeliveryStats, Outcomes
from watcher.delivery.pacing import Pacer
from watcher.notifiers.base import Notifier
from watcher.ops.metrics import Metrics
from watcher.store import DeliveryStore, OutboxRow, UnreadableRow


class DeliveryWorker:
    """Sends outbox rows through notifiers; the single place that decides on retries."""

    def __init__(
        self,
        store: DeliveryStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
        db: StoreCall | None = None,
        on_progress: Callable[[], None] | None = None,
        redact: Callable[[str], str] = lambda text: text,
        render: Render = render_builtin,
        metrics: Metrics | None = None,
        enrich: Enrich | None = None,
        cards: Callable[[Target], CardRenderer] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        gate: SendGate | None = None,
    ) -> None:
        self._store = store
        self._gate = gate
        self._render = render
        self._enrich = enrich
        self._clock = clock
        self._db = db or run_inline
        self._pacer = Pacer()
        self._stop_requested = anyio.Event()
        self._tg: TaskGroup | None = None
        self._on_progress = on_progress or (lambda: None)
        self.stats = DeliveryStats()
        self.metrics = metrics or Metrics()
        self._lanes = Lanes(
            LaneWork(
                store=store,
                db=self._db,
                clock=clock,
                dispatch=self.dispatch,
                on_progress=self._on_progress,
            )
        )
        # Destinations can echo anything back, our own secrets included: every
        # reason is masked before it is logged or stored.
        self._outcomes = Outcomes(
            store,
            db=self._db,
            clock=clock,
            jitter=jitter,
            redact=redact,
            stats=self.stats,
            metrics=self.metrics,
            on_progress=self._on_progress,
            hold=self._lanes.hold,
            sleep=sleep,
        )
        self._cards = CardKeeper(
            store,
            db=self._db,
            clock=clock,
            pace=self._turn,
            outcomes=self._outcomes,
            metrics=self.metrics,
            # How each target's cards look (the daemon's follows the target's templates).
            cards=cards or builtin_cards,
            enrich=enrich,
        )

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
        self._lanes.set_targets(targets, notifiers, self._tg)

    async def released(self, notifier: Notifier) -> None:
        """Return once no lane uses `notifier` any more (its in-flight sends finished)."""
        await self._lanes.released(notifier)

    def stop(self) -> None:
        """Ask every lane to finish its current send and stop; pending rows stay queued."""
        self._stop_requested.set()
        self._lanes.stop()

    def wake(self, targets: Collection[str] | None = None) -> None:
        """Tell lanes that new rows may be due (all lanes when `targets` is None)."""
        self._lanes.wake(targets)

    # --- sending -------------------------------------------------------------------

    @asynccontextmanager
    async def _turn(self, target: Target) -> AsyncIterator[None]:
        """`target`'s pacing slot, then the gate: every outbound call starts in one."""
        async with self._pacer.pace(target):
            if self._gate is not None:
                await self._gate()
            yield

    async def dispatch(
        self, target: Target, notifier: Notifier, row: OutboxRow | UnreadableRow
    ) -> Dispatched:
        """Send one due row by the path its target takes: the session's live card (which
        paces each Slack call itself), or a message of its own in its pacing slot.
        """
        if keeps_card(target, notifier, row):
            return Dispatched(tuple(await self.attempt_card(target, notifier, row)), None)
        async with self._turn(target):
            outcome = await self.attempt(target, notifier, row)
        return Dispatched((row.id,), isinstance(outcome, Sent))

    async def attempt(
        self, target: Target, notifier: Notifier, row: OutboxRow | UnreadableRow
    ) -> SendOutcome:
        """Send one row and record the outcome: delivered, retry later, or dead letter.

        A row that cannot be read, rendered or sent because of a bug on our side
        (any exception from decoding, rendering, signing or a notifier) becomes a
        dead letter with the exception as its reason; the lane goes on.
        """
        if isinstance(row, UnreadableRow):
            return await self._outcomes.bury_unreadable(target, row)
        event = row.event
        where = f"{event.type} {event.session.id if event.session else '-'} -> {target.name}"
        if self._enrich is not None:
            event = await enriched(self._enrich, event, row.rule, where)
        try:
            message = await self._render(target, event, row.rule)
        except Exception as error:
            return await self._outcomes.bury(
                target.name, row.id, where, f"cannot render: {describe_error(error)}", error
            )
        try:
            outcome = await notifier.send(message, now=self._clock())
        except Exception as error:  # a notifier bug must not kill the lane
            return await self._outcomes.bury(
                target.name, row.id, where, f"notifier error: {describe_error(error)}", error
            )
        return await self._outcomes.settle(target, row, outcome, where)

    async def attempt_card(
        self, target: Target, notifier: Notifier, head: OutboxRow | UnreadableRow
    ) -> list[int]:
        """Bring the session's card up to date with every pending row of `head`'s session;
        returns the ids of the rows this attempt covered (see `CardKeeper.attempt`).
        """
        return await self._cards.attempt(target, notifier, head)

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
                    dispatched = await self.dispatch(target, notifiers[name], row)
                    seen.update(dispatched.covered)
                    attempted += len(dispatched.covered)
        return attempted
