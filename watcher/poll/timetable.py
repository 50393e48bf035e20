"""When each watched session is next due: one heap and one task for all of them.

The daemon's fixed ticks (rule timer, heartbeat) are plain anyio loops. Polls
do not get a scheduler job each: an APScheduler job run cost about 140 µs of
CPU here (trigger arithmetic on aware datetimes, job store re-sorting, events,
a task per run), more than a third of an unchanged poll, and a job whose
session was still being polled ran all the same. Here a due session costs a
heap pop and push, and the one task that serves the heap wakes at most every
`GRANULARITY` seconds, firing every session due by then.

Times follow `watcher.core.schedule.PollTiming`: each session keeps a base
time advanced by `period` per run, and fires at base + uniform(0, jitter), so
the phase drawn for its first run holds and the jitter never accumulates. A
session whose run was missed by more than a period (a stalled loop, a
suspended machine) fires once, then continues on its grid.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from watcher.core.schedule import PollTiming

log = logging.getLogger("watcher.timetable")
GRANULARITY = 0.01  # seconds: due sessions are fired in batches at most this far apart
IDLE_WAKE = 1.0  # seconds between looks at an empty timetable


@dataclass(slots=True)
class _Entry:
    timing: PollTiming
    base: float  # the current slot; the run fires at base + offset
    offset: float
    version: int


class Timetable:
    """Due times of many keys; `run()` calls `fire(key)` when each falls due, forever."""

    def __init__(
        self,
        fire: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        on_cycle: Callable[[], None] = lambda: None,
    ) -> None:
        self._fire = fire
        self._on_cycle = on_cycle  # called at least every IDLE_WAKE seconds while running
        self._clock = clock
        self._jitter = jitter
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []  # (due, version, key); stale ones skipped
        self._versions = 0
        self._wake: anyio.Event | None = None  # made by run(), inside the event loop
        self._planned_wake = math.inf
        self._stopped = False

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def set(self, key: str, timing: PollTiming, *, first: bool) -> None:
        """(Re)schedule `key`: first run after `timing.first_delay` when `first`, else
        after one period; a previous schedule of `key` is replaced.
        """
        now = self._clock()
        base = now + (timing.first_delay if first else timing.period)
        self._versions += 1
        entry = _Entry(timing, base, 0.0 if first else timing.jitter * self._jitter(), 0)
        entry.version = self._versions
        self._entries[key] = entry
        due = base + entry.offset
        heapq.heappush(self._heap, (due, entry.version, key))
        if due < self._planned_wake and self._wake is not None:
            self._wake.set()

    def due_in(self, key: str) -> float | None:
        """Seconds until `key` is next due (negative when overdue), or None if unknown."""
        entry = self._entries.get(key)
        return None if entry is None else entry.base + entry.offset - self._clock()

    def timing(self, key: str) -> PollTiming | None:
        """The timing `key` is scheduled with, if it is scheduled."""
        entry = self._entries.get(key)
        return None if entry is None else entry.timing

    def remove(self, key: str) -> None:
        """Stop firing `key` (its heap entry is dropped when it surfaces)."""
        self._entries.pop(key, None)

    def next_due(self) -> float | None:
        """When the earliest live entry is due, if any."""
        heap = self._heap
        while heap:
            due, version, key = heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.version == version:
                return due
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[str]:
        """Keys due at `now`, each rescheduled for its next slot."""
        fired: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, version, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is None or entry.version != version:
                continue  # removed or rescheduled since
            fired.append(key)
            timing = entry.timing
            base = entry.base + timing.period
            if base <= now:  # missed whole periods: fire once, keep the grid
                base += (math.floor((now - base) / timing.period) + 1) * timing.period
            entry.base = base
            entry.offset = timing.jitter * self._jitter()
            heapq.heappush(heap, (base + entry.offset, version, key))
        return fired

    def stop(self) -> None:
        """Make `run()` return."""
        self._stopped = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Fire due keys until `stop()`."""
        self._wake = anyio.Event()
        while not self._stopped:
            self._on_cycle()
            for key in self.pop_due(self._clock()):
                try:
                    self._fire(key)
                except Exception:  # a bug met for one key must not stop the others' polls
                    log.exception("firing %s raised", key)
            due = self.next_due()
            now = self._clock()
            delay = IDLE_WAKE if due is None else min(max(due - now, GRANULARITY), IDLE_WAKE)
            self._planned_wake = now + delay
            wake = self._wake
            with anyio.move_on_after(delay):
                await wake.wait()
            if wake.is_set():
                self._wake = anyio.Event()
