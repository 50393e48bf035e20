"""The poll scheduler: when each watched session is polled, and by whom.

It owns the timetable (each session's next due time at the cadence its state
calls for), the earliest-deadline queue of due polls, the set of sessions
queued or being polled (each at most once), and the workers that take a token
of the request budget, then the most urgent queued session, and poll it.
A due session the latest listing vouches for is not polled; one held back by
backoff waits.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from anyio.abc import TaskGroup

from watcher.core.cadence import needs_reschedule, poll_cadence, poll_deadline, poll_priority
from watcher.core.discovery import decide_fetch
from watcher.core.schedule import poll_timing
from watcher.core.settings import WatchedSession
from watcher.daemon.live import Part, Wiring
from watcher.ops.logs import context
from watcher.poll.book import SessionEntry
from watcher.poll.queue import PollQueue
from watcher.poll.timetable import Timetable

log = logging.getLogger("watcher.daemon")
UNKNOWN = SessionEntry()  # what is known of a session without an entry (never written)


class PollScheduler(Part):
    """The timetable, the queue of due polls, and the poll workers."""

    def __init__(self, wiring: Wiring, rng: random.Random) -> None:
        super().__init__(wiring)
        self._rng = rng
        self.timetable = self._new_timetable()  # when each session is next polled
        self.last_cycle = time.monotonic()  # when the timetable last looked for due polls
        self.queue: PollQueue | None = None
        self.in_flight: set[str] = set()  # queued or being polled
        self.running = False  # a run has begun: polls are scheduled (not a one-shot)
        self.book.on_forget(self.unschedule)  # a forgotten session keeps no slot

    def _new_timetable(self) -> Timetable:
        return Timetable(self.tick, jitter=self._rng.random, on_cycle=self._cycled)

    def _cycled(self) -> None:
        self.last_cycle = time.monotonic()

    def open(self) -> PollQueue:
        """A run begins: from now on, polls are queued and sessions scheduled."""
        self.queue = PollQueue()
        self.running = True
        return self.queue

    def start(
        self, work: TaskGroup, poll: Callable[[str], Awaitable[object]], workers: int
    ) -> None:
        """Start `workers` poll workers in `work`, on a fresh timetable."""
        for _ in range(workers):
            work.start_soon(self._worker, poll)
        self.timetable = self._new_timetable()  # a run starts a fresh one

    def schedule_all(self) -> None:
        """Schedule every watched session, its first poll spread over its interval."""
        for watched in self.book.watched.values():
            self.schedule(watched, first=True)

    def stop(self) -> None:
        """Stop firing and queueing; polls still queued are let go."""
        self.timetable.stop()
        if self.queue is not None:
            for session_id in self.queue.close():
                self.in_flight.discard(session_id)

    def tick(self, session_id: str) -> None:
        """A session fell due: queue a poll unless queued, held back, or vouched for by the list."""
        if self.live.stopping or self.queue is None or session_id in self.in_flight:
            return
        backoff = self.backoff
        paused = backoff.paused_until or backoff.api_paused_until is not None
        if paused and not backoff.allowed(session_id, self.clock()):
            return
        settings = self.live.settings
        entry = self.book.entries.get(session_id, UNKNOWN)
        if settings.discover is not None and not entry.leaving:
            decision = decide_fetch(
                entry.listing,
                entry.updated_at,
                entry.fetched_at,
                entry.interval or settings.poll.interval,
                settings.poll.idle_cap,
                self.clock(),
            )
            if not decision.fetch:
                self.stats.list_skips += 1
                return
        self.enqueue(session_id)

    def enqueue(self, session_id: str) -> bool:
        """Queue a poll of `session_id` now, unless one is queued or running already."""
        queue = self.queue
        if self.live.stopping or queue is None or session_id in self.in_flight:
            return False
        entry = self.book.entries.get(session_id, UNKNOWN)
        deadline = poll_deadline(time.monotonic(), entry.interval, self.live.settings.poll.interval)
        queue.put(session_id, deadline, poll_priority(entry.state))
        self.in_flight.add(session_id)
        return True

    async def _worker(self, poll: Callable[[str], Awaitable[object]]) -> None:
        """Take a token, then the most urgent queued session, and poll it."""
        queue = self.queue
        assert queue is not None
        while await queue.wait():
            if not await self.live.unless_stopping(self.budget.acquire):
                return
            session_id = queue.pop()
            if session_id is None:
                self.budget.refund()  # another worker took the last one
                continue
            try:
                if not self.live.stopping:
                    await poll(session_id)
            except Exception:  # one bad poll must not stop the others
                log.exception("poll of %s crashed", session_id, extra=context(session=session_id))
            finally:
                self.in_flight.discard(session_id)

    def schedule(self, watched: WatchedSession, *, first: bool) -> None:
        """(Re)schedule `watched` at its current cadence; `first` spreads its first poll."""
        entry = self.book.entry(watched.id)
        cadence = poll_cadence(self.live.settings.poll, watched.interval, entry.state, self.clock())
        entry.interval = cadence.interval
        if cadence.interval is None:
            self.unschedule(watched.id)
            return
        self._set_timing(watched.id, cadence.interval, first=first)

    def _set_timing(self, session_id: str, interval: timedelta, *, first: bool) -> None:
        timing = poll_timing(interval, self.live.settings.poll.jitter, self._rng.random())
        self.timetable.set(session_id, timing, first=first)

    def unschedule(self, session_id: str) -> None:
        """Stop polling `session_id` on a timetable."""
        self.timetable.remove(session_id)

    def reschedule(
        self, session_id: str, entry: SessionEntry | None = None, *, force: bool = False
    ) -> None:
        """After a poll: move the session in the timetable to the interval its state calls for.

        Its next poll is one new interval from now; getting faster applies at once
        (activity snaps back to the fast interval on the poll that saw it).
        `force` applies new settings (a reload) even when the interval is the same.
        """
        watched = self.book.watched.get(session_id)
        if watched is None or not self.running or self.live.stopping:
            return
        if entry is None:
            entry = self.book.entry(session_id)
        cadence = poll_cadence(self.live.settings.poll, watched.interval, entry.state, self.clock())
        if not force and not needs_reschedule(entry.interval, cadence.interval):
            return
        self.stats.reschedules += 1
        entry.interval = cadence.interval
        if cadence.interval is None:
            self.unschedule(session_id)
        else:
            self._set_timing(session_id, cadence.interval, first=False)
        log.debug("%s now polled every %s: %s", session_id, cadence.interval, cadence.reason)
