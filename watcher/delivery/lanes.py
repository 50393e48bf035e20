"""Lanes: one per target, each serving that target's due rows on its own.

A lane wakes when told new rows may be due, fetches a batch of due rows (the
store returns only the oldest pending row of each session, so one session's
notifications reach a target in order), hands each to the worker's one
dispatch, and otherwise sleeps until the next row is due. A paced target or
Slack gets its rows in turn; an unpaced webhook gets them together once it
has just accepted a row. A Retry-After holds the lane until it has passed. A
failing or slow target never delays another, and no error ends a lane. A lane
stopped by a change of its target finishes its send first; `Lanes.released`
says when its notifier is free to close.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from anyio.abc import TaskGroup

from watcher.core.settings import Target
from watcher.delivery.hooks import StoreCall
from watcher.delivery.pacing import sends_together
from watcher.notifiers.base import Notifier
from watcher.store import DeliveryStore, OutboxRow, UnreadableRow

log = logging.getLogger("watcher.delivery")

BATCH = 32
IDLE_WAKE = timedelta(seconds=10)  # also the idle lanes' heartbeat period
LANE_PAUSE = timedelta(seconds=1)  # after an unexpected error (the store's), before going on


@dataclass(frozen=True, slots=True)
class Dispatched:
    """What one dispatch of a row covered: the ids it settled (a card folds a session's
    pending rows into one update), and whether the target accepted a plain row
    (None for a card, whose rows are settled one by one).
    """

    covered: tuple[int, ...]
    accepted: bool | None


Dispatch = Callable[[Target, Notifier, OutboxRow | UnreadableRow], Awaitable[Dispatched]]
"""Sends one due row to a target by the path its target takes, recording the outcome."""


@dataclass(frozen=True, slots=True)
class LaneWork:
    """What every lane is given: where rows come from and where each one goes."""

    store: DeliveryStore
    db: StoreCall
    clock: Callable[[], datetime]
    dispatch: Dispatch
    on_progress: Callable[[], None]


class Lane:
    """Serves one target's due rows until stopped."""

    def __init__(
        self, target: Target, notifier: Notifier, work: LaneWork, predecessor: Lane | None = None
    ) -> None:
        self.target = target
        self.notifier = notifier
        self._work = work
        self._wake = anyio.Event()
        self._stopping = False
        self._not_before: datetime | None = None
        self._predecessor = predecessor
        self._accepting = False  # the target accepted the last row sent (concurrency allowed)
        self._stopped = anyio.Event()

    @property
    def held_until(self) -> datetime | None:
        """When a destination's Retry-After lets this lane send again (None: never held)."""
        return self._not_before

    def poke(self) -> None:
        """Wake the lane: new rows may be due, or it should stop."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the current send, then stop; pending rows stay queued."""
        self._stopping = True
        self.poke()

    def hold(self, until: datetime) -> None:
        """Send nothing more to this target before `until` (a destination's Retry-After)."""
        self._not_before = until

    def should_stop(self) -> bool:
        """Whether the lane was asked to stop."""
        # A method, not an attribute, so checks after an await are not narrowed away.
        return self._stopping

    async def stopped(self) -> None:
        """Return once the lane has finished its last send."""
        await self._stopped.wait()

    async def serve(self) -> None:
        """Serve due rows until stopped; an unexpected error pauses the lane, never ends it."""
        if self._predecessor is not None:
            await self._predecessor.stopped()
            self._predecessor = None
        try:
            while not self.should_stop():
                try:
                    await self._serve_once()
                except Exception:  # no error, not even the store's, may end a lane
                    log.exception("lane %s: unexpected error; going on", self.target.name)
                    await self._sleep_until(self._work.clock() + LANE_PAUSE)
        finally:
            self._stopped.set()

    async def _serve_once(self) -> None:
        """Send one batch of due rows, or sleep until the next one is due."""
        work = self._work
        name = self.target.name
        work.on_progress()
        now = work.clock()
        if self._not_before is not None and self._not_before > now:
            await self._sleep_until(self._not_before)
            return
        rows = await work.db(work.store.due, name, now, BATCH)
        if not rows:
            next_due = await work.db(work.store.next_due, name)
            await self._sleep_until(next_due or now + IDLE_WAKE)
            return
        if sends_together(self.target):
            await self._send_together(rows)
        else:
            await self._send_in_turn(rows)

    async def _sleep_until(self, when: datetime) -> None:
        """Sleep until `when` (at most `IDLE_WAKE`), or until poked."""
        delay = (when - self._work.clock()).total_seconds()
        delay = min(max(delay, 0.0), IDLE_WAKE.total_seconds())
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._wake.wait()
        if self._wake.is_set():
            self._wake = anyio.Event()

    async def _send_in_turn(self, rows: list[OutboxRow | UnreadableRow]) -> None:
        """A paced target: one row after another, each in its pacing slot."""
        for row in rows:
            if self.should_stop():
                break
            await self._work.dispatch(self.target, self.notifier, row)
            if self._not_before is not None and self._not_before > self._work.clock():
                break

    async def _send_together(self, rows: list[OutboxRow | UnreadableRow]) -> None:
        """An unpaced target: the rows at once. `due` returns at most one row per
        session, so this never reorders one session's notifications.

        Until the target has just accepted a row (at start, after any failure),
        one row goes alone first, so a target that is down or rate-limiting sees
        one request, not a batch, and its Retry-After holds back the rest.
        """
        if not self._accepting:
            if not await self._dispatch(rows[0]):
                return
            rows = rows[1:]
        async with anyio.create_task_group() as tg:
            for row in rows:
                if self.should_stop() or not self._accepting:
                    break
                tg.start_soon(self._dispatch, row)

    async def _dispatch(self, row: OutboxRow | UnreadableRow) -> bool:
        """Dispatch `row`, noting whether the target accepted it."""
        dispatched = await self._work.dispatch(self.target, self.notifier, row)
        self._accepting = dispatched.accepted is True
        return self._accepting


class Lanes:
    """The running lanes, one per target name."""

    def __init__(self, work: LaneWork) -> None:
        self._work = work
        self._lanes: dict[str, Lane] = {}
        self._retiring: set[Lane] = set()  # stopped by a change, finishing their send

    def __len__(self) -> int:
        return len(self._lanes)

    def get(self, name: str) -> Lane | None:
        """The lane serving target `name`, if there is one."""
        return self._lanes.get(name)

    def set_targets(
        self, targets: Mapping[str, Target], notifiers: Mapping[str, Notifier], tg: TaskGroup
    ) -> None:
        """Start lanes (in `tg`) for new or changed targets and stop lanes of removed ones."""
        retired: dict[str, Lane] = {}
        for name, lane in list(self._lanes.items()):
            if targets.get(name) != lane.target or notifiers.get(name) is not lane.notifier:
                lane.stop()
                retired[name] = self._lanes.pop(name)
                self._retiring.add(lane)
        for name, target in targets.items():
            if name not in self._lanes:
                # The new lane starts once the old one has finished its send, so
                # one row is never in flight twice.
                lane = Lane(target, notifiers[name], self._work, predecessor=retired.get(name))
                self._lanes[name] = lane
                tg.start_soon(self._serve, lane, name=f"lane:{name}")

    async def _serve(self, lane: Lane) -> None:
        try:
            await lane.serve()
        finally:
            self._retiring.discard(lane)

    async def released(self, notifier: Notifier) -> None:
        """Return once no lane uses `notifier` (a lane stopped by a change has finished
        its send): from then on it may be closed."""
        while True:
            users = [
                lane
                for lane in (*self._lanes.values(), *self._retiring)
                if lane.notifier is notifier
            ]
            if not users:
                return
            for lane in users:
                await lane.stopped()

    def stop(self) -> None:
        """Ask every lane to finish its current send and stop."""
        for lane in self._lanes.values():
            lane.stop()

    def wake(self, targets: Collection[str] | None = None) -> None:
        """Tell lanes that new rows may be due (all lanes when `targets` is None)."""
        for name, lane in self._lanes.items():
            if targets is None or name in targets:
                lane.poke()

    def hold(self, name: str, until: datetime) -> None:
        """Hold target `name`'s lane until `until`, if it has one."""
        lane = self._lanes.get(name)
        if lane is not None:
            lane.hold(until)
