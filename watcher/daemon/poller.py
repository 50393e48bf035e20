"""The poller: one `poll(session_id)` is fetch -> intake -> remember.

It asks the API for the session (with the digest of the body its stored state
came from, so an identical body is answered `Unchanged` and skips parsing,
diffing and the database), hands a changed answer to the intake (diff, rules
and outbox rows committed at once, in the database thread), then folds the
outcome into the session book, backoff, API health, the poll figures, and the
session's next poll; a session that left the list is dropped after its last poll.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime

from watcher.core.figures import poll_outcome
from watcher.core.poll import (
    Answer,
    Fetched,
    FetchFailed,
    FetchFailureKind,
    FetchResult,
    NotFound,
    Unchanged,
)
from watcher.core.settings import WatchedSession
from watcher.core.text import describe_error
from watcher.daemon.eventlog import log_decisions, log_events
from watcher.daemon.health import HealthWatch
from watcher.daemon.live import Part, Wiring
from watcher.daemon.scheduler import PollScheduler
from watcher.intake.poll import PollReport, apply_poll
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.ops.logs import context
from watcher.poll.book import SessionEntry
from watcher.poll.recorder import PollRecorder

log = logging.getLogger("watcher.daemon")


class Poller(Part):
    """Polls one session at a time: fetch, intake, remember."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        health: HealthWatch,
        scheduler: PollScheduler,
        recorder: PollRecorder | None,
    ) -> None:
        super().__init__(wiring)
        self.health = health
        self.scheduler = scheduler
        self.recorder = recorder
        if recorder is not None:
            failures = self.metrics.record_failures
            recorder.count_failures_with(lambda kind: failures.labels(kind).inc())
        self.book.on_forget(self._release)

    def _release(self, session_id: str) -> None:
        """The client in force keeps a prepared request per session: a forgotten one goes."""
        self.live.source.forget(session_id)

    async def poll(
        self, session_id: str, *, dry_run: bool = False, budgeted: bool = False
    ) -> PollReport:
        """Poll one session now, record what changed, and wake the targets concerned.

        The request takes a token of the shared budget first, unless the
        caller already holds one (`budgeted`).
        """
        book = self.book
        watched = book.watched.get(session_id)
        if watched is None:
            if budgeted:
                self.budget.refund()
            return PollReport(session_id)
        if not budgeted:
            await self.budget.acquire()
        entry = book.entries.get(session_id) or book.entry(session_id)
        answer, took = await self._fetch(session_id, entry, dry_run=dry_run)
        now = self.clock()
        if isinstance(answer, Unchanged):
            return await self._unchanged(session_id, entry, answer, took, now)
        result: FetchResult = answer
        if isinstance(result, FetchFailed):
            result = replace(result, reason=self.live.redact(result.reason))
            if result.status == 429:
                self.budget.throttled(result.retry_after)
        report = await self._record(watched, entry, result, now, dry_run=dry_run)
        if self.recorder is not None and not isinstance(result, FetchFailed):
            self.recorder.write(session_id, result, now)
        self.stats.polls += 1
        self.stats.last_poll_at = now
        if not dry_run:
            counted = report.failure if report.failure is not None else result
            self._count(session_id, counted, report, took, now)
        self._remember(watched, entry, report, now, dry_run=dry_run)
        if isinstance(result, NotFound) and not report.events and report.new_rows == 0:
            log.debug("session %s not found", session_id)
        log_events(report)
        log_decisions(session_id, report.decisions)
        if report.new_rows:
            failpoint(Failpoint.AFTER_OUTBOX_COMMIT)
        if not dry_run:
            await self._after(session_id, entry, result, report, now)
        return report

    async def _after(
        self,
        session_id: str,
        entry: SessionEntry,
        result: FetchResult,
        report: PollReport,
        now: datetime,
    ) -> None:
        """API health, delivery, and the session's next poll (or its leaving)."""
        await self.health.observe(result, now)
        if report.new_rows:
            self.wake(report.targets)
        if report.failure is None and entry.leaving:
            await self.drop(session_id)
        elif report.failure is None:
            self.scheduler.reschedule(session_id, entry)

    async def _fetch(
        self, session_id: str, entry: SessionEntry, *, dry_run: bool
    ) -> tuple[Answer, float]:
        """Ask the source, timed; a bug in fetching or parsing is a failed poll, nothing more."""
        # A recording wants every body, so it turns the identical-body skip off.
        known = entry.digest if not dry_run and self.recorder is None else None
        started = time.perf_counter()
        answer: Answer
        source = self.live.borrow()  # a reload closes the client it replaced only after this
        try:
            answer = await source.fetch_session(session_id, known=known)
        except Exception as error:
            answer = FetchFailed(FetchFailureKind.RETRYABLE, f"poll error: {describe_error(error)}")
            self._log_raise(session_id, entry, "poll", answer.reason)
        finally:
            self.live.give_back(source)
        return answer, time.perf_counter() - started

    async def _record(
        self,
        watched: WatchedSession,
        entry: SessionEntry,
        result: FetchResult,
        now: datetime,
        *,
        dry_run: bool,
    ) -> PollReport:
        """Diff, evaluate and commit one answer; a failure to record is a failed poll."""
        settings = self.live.settings
        session_id = watched.id
        discovered = self.book.is_discovered(session_id)
        try:
            report = await self.db(
                apply_poll,
                self.store,
                settings.rules,
                settings.factory.session_url,
                watched,
                result,
                now,
                dry_run=dry_run,
                quiet=settings.quiet_hours,
                created_after=self.book.first_discovery_at if discovered else None,
            )
        except Exception as error:  # the API answered; recording it failed (bug or store)
            entry.digest = None  # the stored state is no longer known
            reason = self.live.redact(f"recording failed: {describe_error(error)}")
            self._log_raise(session_id, entry, "recording the poll", reason)
            return PollReport(session_id, failure=FetchFailed(FetchFailureKind.RETRYABLE, reason))
        except BaseException:
            entry.digest = None
            raise
        if not dry_run:
            if isinstance(result, Fetched) and result.digest is not None:
                entry.digest = result.digest  # the body the stored state now comes from
            elif not isinstance(result, FetchFailed):
                entry.digest = None  # a 404 stores `Gone`: the same body again is a change
        return report

    def _log_raise(self, session_id: str, entry: SessionEntry, what: str, reason: str) -> None:
        """Log a bug met while polling: its traceback once, then one line while it lasts."""
        if entry.raising:
            log.warning("%s of %s raised again: %s", what, session_id, reason)
            return
        entry.raising = True
        log.exception("%s of %s raised", what, session_id)

    def _count(
        self, session_id: str, result: Answer, report: PollReport, took: float, now: datetime
    ) -> None:
        """Metrics and bookkeeping of one poll: memory only, no I/O."""
        outcome = poll_outcome(result)
        metrics = self.metrics
        metrics.polls.labels(outcome).inc()
        metrics.poll_duration.observe(took)
        for event in report.events:
            metrics.events.labels(event.type).inc()
        stats = self.stats
        stats.polled[session_id] = (now, outcome)
        if isinstance(result, FetchFailed):
            stats.last_failure = result.reason
        else:
            stats.last_success = now

    async def _unchanged(
        self, session_id: str, entry: SessionEntry, answer: Unchanged, took: float, now: datetime
    ) -> PollReport:
        """The hot path: the body is the one the stored state came from. Nothing to do
        but count it, on the event loop, with no database call and no thread hop.
        """
        stats = self.stats
        stats.polls += 1
        stats.last_poll_at = now
        report = PollReport(session_id, state=entry.state)
        self._count(session_id, answer, report, took, now)
        entry.raising = False
        entry.fetched_at = now  # an own read, as good as a full one
        if self.backoff.failures:
            self.backoff.succeeded(session_id)
        # Folds the success into the API's health; returns at once while it is up.
        await self.health.observe(answer, now)
        if entry.leaving:
            await self.drop(session_id)
        else:
            # No activity: the adaptive cadence may slow this session down.
            self.scheduler.reschedule(session_id, entry)
        return report

    def _remember(
        self,
        watched: WatchedSession,
        entry: SessionEntry,
        report: PollReport,
        now: datetime,
        *,
        dry_run: bool,
    ) -> None:
        """Fold a poll's outcome into backoff and what is known of the session."""
        session_id = watched.id
        if report.failure is not None:
            self.stats.failed_polls += 1
            interval = watched.interval or self.live.settings.poll.interval
            self.backoff.failed(session_id, interval, report.failure, now)
            log.debug(
                "poll of %s failed: %s",
                session_id,
                report.failure.reason,
                extra=context(session=session_id),
            )
            return
        entry.raising = False
        entry.fetched_at = now
        if report.state is not None and not dry_run:
            entry.state = report.state
        self.backoff.succeeded(session_id)

    async def drop(self, session_id: str) -> None:
        """Stop watching a discovered session that left the list (after its last poll)."""
        book = self.book
        entry = book.entries.get(session_id)
        if entry is not None:
            entry.leaving = False
        if session_id in book.configured:
            return
        book.drop(session_id)  # forgets it everywhere: client, timetable, backoff
        await self.db(self.store.forget_discovered, [session_id])
        log.info("session %s left the list: no longer watched", session_id)
