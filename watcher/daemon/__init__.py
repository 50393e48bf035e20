"""The composition root: the poll timetable, discovery, the request budget, the outbox
worker, signals, lifecycle.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import random
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ParamSpec, TypeVar

import anyio
from anyio.abc import TaskStatus
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watcher.core.answer import latest_answer
from watcher.core.cadence import (
    budget_warnings,
    needs_reschedule,
    poll_cadence,
    poll_deadline,
    poll_priority,
)
from watcher.core.card import CardRenderer, EarlierCard
from watcher.core.diff import diff_states, session_ref
from watcher.core.discovery import (
    MAX_PAGES,
    ListedSession,
    ListMark,
    ListPage,
    Selection,
    decide_fetch,
    facts_from_snapshot,
    listed_change,
    select_sessions,
)
from watcher.core.figures import (
    Readiness,
    ReadinessInputs,
    poll_outcome,
    readiness,
    status_bucket,
)
from watcher.core.health import ApiHealth, ApiState, observe
from watcher.core.message import Message, SlackMessage
from watcher.core.model import Event, EventType, SessionState, Snapshot
from watcher.core.poll import (
    Answer,
    Fetched,
    FetchFailed,
    FetchFailureKind,
    FetchResult,
    NotFound,
    Unchanged,
)
from watcher.core.retry import poll_backoff
from watcher.core.rules import route
from watcher.core.rulestate import Decision, Outcome, active_mute
from watcher.core.schedule import poll_timing
from watcher.core.secret import redact
from watcher.core.settings import DiscoverSettings, Settings, Target, WatchedSession
from watcher.core.snapshot import to_unix_ms
from watcher.core.template import render_card_for, render_message, rule_named
from watcher.core.text import describe_error
from watcher.delivery import DeliveryWorker, Render
from watcher.intake.poll import PollReport, apply_poll, next_state
from watcher.intake.tick import TickReport, apply_tick
from watcher.notifiers import build_notifier
from watcher.notifiers.base import Notifier
from watcher.ops.endpoint import Endpoint, Request, Response, bound_port, text
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.ops.logs import context
from watcher.ops.metrics import Metrics, StoreFigures
from watcher.ops.systemd import ProgressWatchdog, SystemdNotifier
from watcher.poll.api import AnswerSource, FactoryClient, RequestBudget, SessionSource
from watcher.poll.recorder import PollRecorder
from watcher.poll.timetable import Timetable
from watcher.store import OutboxStatus, PollMark, Recorded, SqliteStore

__all__ = ["PollReport", "Watcher", "apply_poll", "next_state", "run_until"]

log = logging.getLogger("watcher.daemon")
ANSWER_TIMEOUT = timedelta(seconds=3)  # how long a notification waits for the last answer
ANSWER_CACHE = 256

P = ParamSpec("P")
R = TypeVar("R")

DRAIN_DEADLINE = 5.0
HEARTBEAT_PERIOD = 5.0  # the scheduler's own heartbeat job, STATUS= updates, housekeeping
STALL_AFTER = 60.0  # a component silent this long withholds the watchdog ping
RULES_TICK = 1.0  # seconds between timer evaluations of time-based rules and digests


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    """What one discovery pass found, or why it failed."""

    listed: int = 0
    added: tuple[str, ...] = ()
    leaving: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()
    new_rows: int = 0
    complete: bool = True
    failure: FetchFailed | None = None


@dataclass
class WatcherStats:
    """Figures for the status line and the logs."""

    polls: int = 0
    failed_polls: int = 0
    last_poll_at: datetime | None = None
    list_skips: int = 0  # due polls the session list stood in for
    lists: int = 0  # complete discovery passes
    failed_lists: int = 0
    reschedules: int = 0


DISCOVERY = "__discovery__"  # the key of the discovery pass in backoff bookkeeping


class PollQueue:
    """Sessions due for a poll, earliest deadline first; each id is queued at most once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str]] = []
        self._count = 0
        self._closed = False
        self._changed = anyio.Event()
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, session_id: str, deadline: float, priority: int) -> None:
        """Queue a poll due by `deadline` (ties: lower `priority` first); ids kept unique."""
        if self._closed:
            return
        self._count += 1
        heapq.heappush(self._heap, (deadline, priority, self._count, session_id))
        self._wake()

    def pop(self) -> str | None:
        """The most urgent queued id, or None when empty."""
        return heapq.heappop(self._heap)[3] if self._heap else None

    async def wait(self) -> bool:
        """Wait until something is queued; False once closed."""
        while not self._heap and not self._closed:
            self._waiters += 1
            try:
                await self._changed.wait()
            finally:
                self._waiters -= 1
        return not self._closed

    def close(self) -> list[str]:
        """Stop; returns the ids that were still queued."""
        self._closed = True
        left = [item[3] for item in self._heap]
        self._heap.clear()
        self._wake()
        return left

    def _wake(self) -> None:
        if self._waiters:  # a new event per put would cost more than the put itself
            changed, self._changed = self._changed, anyio.Event()
            changed.set()


def _note_fallback(problem: str | None, what: str, target: Target, event: Event, rule: str) -> None:
    """Log a template that failed at send time (the built-in `what` went out instead)."""
    if problem is None:
        return
    log.warning(
        "template for %s (rule %s) failed; the %s is built-in instead: %s",
        target.name,
        rule,
        what,
        problem,
        extra=context(target=target.name, rule=rule, event_id=event.id),
    )


class Watcher:
    """One watcher: polls its sessions, records transitions, delivers notifications."""

    def __init__(  # noqa: PLR0915 - the composition root wires every part here
        self,
        settings: Settings,
        *,
        source: SessionSource | None = None,
        notifiers: Mapping[str, Notifier] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        reload: Callable[[], Settings] | None = None,
        systemd: SystemdNotifier | None = None,
        render: Render | None = None,
        recorder: PollRecorder | None = None,
        store: SqliteStore | None = None,
    ) -> None:
        self.settings = settings
        self.recorder = recorder or (
            PollRecorder(settings.record_path) if settings.record_path else None
        )
        self.clock = clock
        self._rng = rng or random.Random()
        self._reload_settings = reload
        self.store = store or SqliteStore(settings.state_path)
        self.source: SessionSource = source or self._client(settings)
        self.notifiers: dict[str, Notifier] = dict(
            notifiers or {name: build_notifier(t) for name, t in settings.targets.items()}
        )
        self._retired: list[Notifier | SessionSource] = []
        self._db_limiter = anyio.CapacityLimiter(1)
        # Delivery has its own connection and database thread: SQLite in WAL mode
        # lets it read and mark rows while polls commit, so a burst of sends never
        # queues behind polls (writes still take turns on SQLite's write lock).
        # Its marks need no fsync each (see SqliteStore): a burst of a thousand
        # sends would otherwise wait for a thousand flushes.
        self._delivery_store = (
            self.store
            if self.store.path == ":memory:"
            else SqliteStore(self.store.path, durable=False)
        )
        self._delivery_limiter = anyio.CapacityLimiter(1)
        self.systemd = systemd or SystemdNotifier.from_env()
        self.progress = ProgressWatchdog(STALL_AFTER)
        for component in ("scheduler", "delivery"):
            self.progress.register(component, time.monotonic())
        self._status_note = ""
        self.metrics = Metrics()
        self.delivery = DeliveryWorker(
            self._delivery_store,
            clock=clock,
            jitter=self._rng.random,
            db=self._delivery_db,
            on_progress=lambda: self.progress.beat("delivery", time.monotonic()),
            redact=self.redact,
            render=render or self._render_message,
            metrics=self.metrics,
            enrich=self._add_last_answer,
            cards=self._card_renderer,
        )
        # Last answers fetched for `include_last_answer`, by event id: a row for a
        # second target, or a retry, reuses the answer instead of asking again.
        self._answers: dict[str, str] = {}
        self.answer_timeout = ANSWER_TIMEOUT
        self.health = ApiHealth()
        self.stats = WatcherStats()
        self.budget = RequestBudget(settings.factory.max_requests_per_second)
        # What is known per session, kept in memory for scheduling decisions.
        self._states: dict[str, SessionState] = self.store.load_states()
        found = self.store.discovered()
        self._first_discovery_at = found.first_at
        self._discovered_ids: set[str] = set(found.session_ids)
        self._fetched_at: dict[str, datetime] = {}  # last own read (not the list)
        self._listing: dict[str, ListMark] = {}  # what the latest listing said
        self._facts: dict[str, ListedSession] = {}  # read on their own to judge bare items
        self._leaving: set[str] = set()  # left the list: one last poll, then dropped
        self._job_interval: dict[str, timedelta | None] = {}
        self._configured: frozenset[str] = frozenset(w.id for w in settings.sessions)
        self._watched: dict[str, WatchedSession] = self._watch_list(settings)
        self._in_flight: set[str] = set()
        # The digest of the last body each session's stored state was derived
        # from. An identical body cannot change that state, so it skips parsing,
        # diffing and the database. Empty at start: the first poll after a start
        # always compares with the stored snapshot (catch-up after downtime).
        self._digests: dict[str, bytes] = {}
        # Failed polls back off per session; an API 429 with Retry-After pauses all.
        self._failures: dict[str, int] = {}
        self._paused_until: dict[str, datetime] = {}
        self._api_paused_until: datetime | None = None
        self._raising: set[str] = set()  # sessions whose last poll raised (traceback logged)
        self._stop = anyio.Event()
        self._stopping = False
        self._scheduler: AsyncIOScheduler | None = None  # the daemon's own periodic jobs
        self.timetable = self._new_timetable()  # when each session is next polled
        self._timetable_cycle = time.monotonic()
        self._queue: PollQueue | None = None
        self._work_scope: anyio.CancelScope | None = None
        self._supervisor_scope: anyio.CancelScope | None = None
        # What operators see: readiness inputs and poll bookkeeping, kept in
        # memory on the hot path and written in one batch by housekeeping.
        self._started = False
        self._last_success: datetime | None = None
        self._last_failure: str | None = None
        self._store_checked_at: datetime | None = None
        self._store_error: str | None = None
        self._polled: dict[str, tuple[datetime, str]] = {}
        # The watched set goes to the store for `status` whenever it changes.
        self._watched_version = 1
        self._watched_written = 0
        self.endpoint_port: int | None = None
        self._waiting: set[anyio.CancelScope] = set()  # waits that a stop cuts short
        self._work: anyio.abc.TaskGroup | None = None
        self._discovering = False
        self._discover_wake = anyio.Event()

    def _render_message(self, target: Target, event: Event, rule: str) -> Message:
        """The message for `target`: its template's, or built-in if it has none or it fails."""
        message, problem = render_message(self.settings, target, event, rule)
        _note_fallback(problem, "message", target, event, rule)
        return message

    def _card_renderer(self, target: Target) -> CardRenderer:
        """How `target`'s cards look: its template's (rule's or target's), else built-in."""

        def card(event: Event, rule: str, earlier: EarlierCard | None) -> SlackMessage:
            message, problem = render_card_for(self.settings, target, event, rule, earlier)
            _note_fallback(problem, "card", target, event, rule)
            return message

        return CardRenderer(card=card)

    async def _add_last_answer(self, event: Event, rule_name: str) -> Event:
        """`event` with `data["last_answer"]` when its rule asks for it and the API answers
        within ANSWER_TIMEOUT; otherwise `event` as it was (the notification goes out anyway).
        """
        rule = rule_named(self.settings, rule_name)
        if rule is None or not rule.include_last_answer or event.session is None:
            return event
        if "last_answer" in event.data:
            return event
        answer = self._answers.get(event.id)
        if answer is None:
            answer = await self._fetch_answer(event.session.id)
            if answer is None:
                return event
            if len(self._answers) >= ANSWER_CACHE:
                self._answers.pop(next(iter(self._answers)))
            self._answers[event.id] = answer
        return replace(event, data={**event.data, "last_answer": answer})

    async def _fetch_answer(self, session_id: str) -> str | None:
        source = self.source
        if not isinstance(source, AnswerSource):
            return None
        limit = self.answer_timeout.total_seconds()
        result: list[Any] | FetchFailed | None = None
        # The budget wait counts too: a crowded budget must not hold a notification.
        with anyio.move_on_after(limit):
            await self.budget.acquire()
            result = await source.fetch_messages(session_id, request_timeout=limit)
        if result is None:
            log.warning("no last answer for %s: no reply within %gs", session_id, limit)
            return None
        if isinstance(result, FetchFailed):
            if result.status == 429:
                self.budget.throttled(result.retry_after)
            log.warning("no last answer for %s: %s", session_id, self.redact(result.reason))
            return None
        return latest_answer(result)

    def _watch_list(self, settings: Settings) -> dict[str, WatchedSession]:
        """Configured sessions, plus discovered ones while discovery is on."""
        watched: dict[str, WatchedSession] = {}
        if settings.discover is not None:
            labels = dict(settings.discover.labels)
            for session_id in sorted(self._discovered_ids):
                watched[session_id] = WatchedSession(id=session_id, labels=labels)
        watched.update({w.id: w for w in settings.sessions})
        return watched

    def _new_timetable(self) -> Timetable:
        return Timetable(self._tick, jitter=self._rng.random, on_cycle=self._timetable_cycled)

    @staticmethod
    def _client(settings: Settings) -> FactoryClient:
        factory = settings.factory
        return FactoryClient(
            factory.base_url,
            factory.api_key,
            timeout=factory.timeout.total_seconds(),
            concurrency=factory.concurrency,
        )

    def redact(self, text: str) -> str:
        """`text` with every configured secret masked (for anything logged or stored)."""
        return redact(text, self.settings.secret_values())

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call in the single database thread, off the event loop."""
        return await anyio.to_thread.run_sync(
            partial(fn, *args, **kwargs), limiter=self._db_limiter
        )

    async def _delivery_db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call of the outbox worker in its own database thread."""
        return await anyio.to_thread.run_sync(
            partial(fn, *args, **kwargs), limiter=self._delivery_limiter
        )

    # --- polling -------------------------------------------------------------------

    async def poll(
        self, session_id: str, *, dry_run: bool = False, budgeted: bool = False
    ) -> PollReport:
        """Poll one session now, record what changed, and wake the targets concerned.

        The request takes a token of the shared budget first, unless the
        caller already holds one (`budgeted`).
        """
        watched = self._watched.get(session_id)
        if watched is None:
            if budgeted:
                self.budget.refund()
            return PollReport(session_id)
        if not budgeted:
            await self.budget.acquire()
        answer, took = await self._fetch(session_id, dry_run=dry_run)
        now = self.clock()
        if isinstance(answer, Unchanged):
            return await self._unchanged(session_id, answer, took, now)
        result: FetchResult = answer
        if isinstance(result, FetchFailed):
            result = replace(result, reason=self.redact(result.reason))
            self._note_throttle(result)
        report = await self._record(watched, result, now, dry_run=dry_run)
        if self.recorder is not None and not isinstance(result, FetchFailed):
            self.recorder.write(session_id, result, now)
        self.stats.polls += 1
        self.stats.last_poll_at = now
        if not dry_run:
            counted = report.failure if report.failure is not None else result
            self._count_poll(session_id, counted, report, took, now)
        self._remember(watched, report, now, dry_run=dry_run)
        if isinstance(result, NotFound) and not report.events and report.new_rows == 0:
            log.debug("session %s not found", session_id)
        _log_events(report)
        _log_decisions(session_id, report.decisions)
        if report.new_rows:
            failpoint(Failpoint.AFTER_OUTBOX_COMMIT)
        if not dry_run:
            await self._after_poll(session_id, result, report, now)
        return report

    async def _after_poll(
        self, session_id: str, result: FetchResult, report: PollReport, now: datetime
    ) -> None:
        """API health, delivery, and the session's next poll (or its leaving)."""
        await self._observe_health(result, now)
        if report.new_rows:
            self.delivery.wake(report.targets)
        if report.failure is None and session_id in self._leaving:
            await self._drop(session_id)
        elif report.failure is None:
            self._reschedule(session_id)

    async def _fetch(self, session_id: str, *, dry_run: bool) -> tuple[Answer, float]:
        """Ask the source, timed; a bug in fetching or parsing is a failed poll, nothing more."""
        # A recording wants every body, so it turns the identical-body skip off.
        skip = not dry_run and self.recorder is None
        known = self._digests.get(session_id) if skip else None
        started = time.perf_counter()
        answer: Answer
        try:
            answer = await self.source.fetch_session(session_id, known=known)
        except Exception as error:
            answer = FetchFailed(FetchFailureKind.RETRYABLE, f"poll error: {describe_error(error)}")
            self._log_raise(session_id, "poll", answer.reason)
        return answer, time.perf_counter() - started

    async def _record(
        self, watched: WatchedSession, result: FetchResult, now: datetime, *, dry_run: bool
    ) -> PollReport:
        """Diff, evaluate and commit one answer; a failure to record is a failed poll."""
        settings = self.settings
        session_id = watched.id
        discovered = session_id in self._discovered_ids and session_id not in self._configured
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
                created_after=self._first_discovery_at if discovered else None,
            )
        except Exception as error:  # the API answered; recording it failed (bug or store)
            self._digests.pop(session_id, None)  # the stored state is no longer known
            reason = self.redact(f"recording failed: {describe_error(error)}")
            self._log_raise(session_id, "recording the poll", reason)
            return PollReport(session_id, failure=FetchFailed(FetchFailureKind.RETRYABLE, reason))
        except BaseException:
            self._digests.pop(session_id, None)
            raise
        if not dry_run:
            self._remember_body(session_id, result)
        return report

    def _log_raise(self, session_id: str, what: str, reason: str) -> None:
        """Log a bug met while polling: its traceback once, then one line while it lasts."""
        if session_id in self._raising:
            log.warning("%s of %s raised again: %s", what, session_id, reason)
            return
        self._raising.add(session_id)
        log.exception("%s of %s raised", what, session_id)

    def _count_poll(
        self, session_id: str, result: Answer, report: PollReport, took: float, now: datetime
    ) -> None:
        """Metrics and bookkeeping of one poll: memory only, no I/O."""
        outcome = poll_outcome(result)
        self.metrics.polls.labels(outcome).inc()
        self.metrics.poll_duration.observe(took)
        for event in report.events:
            self.metrics.events.labels(event.type).inc()
        self._polled[session_id] = (now, outcome)
        if isinstance(result, FetchFailed):
            self._last_failure = result.reason
        else:
            self._last_success = now

    async def tick_rules(self) -> TickReport:
        """Evaluate time-based rules and release due digests now (the timer job's body)."""
        now = self.clock()
        settings = self.settings
        report = await self.db(apply_tick, self.store, settings, self._watched, now)
        for session_id, decisions in report.decisions.items():
            _log_decisions(session_id, decisions)
        for event in {e.id: e for e, _ in report.routes}.values():
            self.metrics.events.labels(event.type).inc()
        for event, r in report.routes:
            log.info("event %s %s -> %s", event.type, _describe(event), r.target)
        if report.new_rows:
            self.delivery.wake(report.targets)
        return report

    async def _rules_job(self) -> None:
        """APScheduler job: time-based rules fire on time even for slowly polled sessions."""
        try:
            await self.tick_rules()
        except Exception:  # the next tick tries again; the daemon keeps running
            log.exception("rule timer failed")

    def _remember_body(self, session_id: str, result: FetchResult) -> None:
        """After a poll went the full path: which body the stored state now comes from."""
        if isinstance(result, Fetched) and result.digest is not None:
            self._digests[session_id] = result.digest
        elif not isinstance(result, FetchFailed):
            # A 404 stores `Gone`: the same body coming back is a change again.
            self._digests.pop(session_id, None)

    async def _unchanged(
        self, session_id: str, answer: Unchanged, took: float, now: datetime
    ) -> PollReport:
        """The hot path: the body is the one the stored state came from. Nothing to do
        but count it, on the event loop, with no database call and no thread hop.
        """
        self.stats.polls += 1
        self.stats.last_poll_at = now
        report = PollReport(session_id, state=self._states.get(session_id))
        self._count_poll(session_id, answer, report, took, now)
        self._raising.discard(session_id)
        self._fetched_at[session_id] = now  # an own read, as good as a full one
        if self._failures and self._failures.pop(session_id, None) is not None:
            self._paused_until.pop(session_id, None)
        # Folds the success into the API's health; returns at once while it is up.
        await self._observe_health(answer, now)
        if session_id in self._leaving:
            await self._drop(session_id)
        else:
            # No activity: the adaptive cadence may slow this session down.
            self._reschedule(session_id)
        return report

    def _remember(
        self, watched: WatchedSession, report: PollReport, now: datetime, *, dry_run: bool
    ) -> None:
        """Fold a poll's outcome into backoff and what is known of the session."""
        session_id = watched.id
        if report.failure is not None:
            self.stats.failed_polls += 1
            self._back_off(session_id, watched.interval, report.failure, now)
            log.debug(
                "poll of %s failed: %s",
                session_id,
                report.failure.reason,
                extra=context(session=session_id),
            )
            return
        self._raising.discard(session_id)
        self._fetched_at[session_id] = now
        if report.state is not None and not dry_run:
            self._states[session_id] = report.state
        if self._failures.pop(session_id, None) is not None:
            self._paused_until.pop(session_id, None)

    def _note_throttle(self, failure: FetchFailed) -> None:
        """A 429 slows the shared budget down (and pauses it for its Retry-After)."""
        if failure.status == 429:
            self.budget.throttled(failure.retry_after)

    def _back_off(
        self, key: str, fixed: timedelta | None, failure: FetchFailed, now: datetime
    ) -> None:
        if failure.status == 429:
            # The API's rate, not this session, is the trouble: the shared budget
            # has slowed down; the session itself waits only for a Retry-After.
            wait = failure.retry_after or timedelta(0)
            self._paused_until[key] = now + wait
            if failure.retry_after is not None and (
                self._api_paused_until is None or now + wait > self._api_paused_until
            ):
                self._api_paused_until = now + wait
            return
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        interval = fixed or self.settings.poll.interval

        delay = poll_backoff(failures, interval, self._rng.random())
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
            if failure.status == 429:
                until = now + failure.retry_after
                if self._api_paused_until is None or until > self._api_paused_until:
                    self._api_paused_until = until
        self._paused_until[key] = now + delay

    def poll_allowed(self, session_id: str, now: datetime) -> bool:
        """Whether backoff or a Retry-After currently holds back polls of `session_id`."""
        if self._api_paused_until is not None and now < self._api_paused_until:
            return False
        until = self._paused_until.get(session_id)
        return until is None or now >= until

    async def _observe_health(self, result: Answer | ListPage, now: datetime) -> None:
        failed = isinstance(result, FetchFailed)
        if not failed and self.health.state is ApiState.UP:
            return  # the hot path: nothing to fold in
        change = observe(
            self.health,
            ok=not failed,
            now=now,
            threshold=self.settings.factory.unavailable_after,
            reason=result.reason if isinstance(result, FetchFailed) else "",
            auth=isinstance(result, FetchFailed) and result.kind is FetchFailureKind.AUTH,
        )
        recovered = self.health.state is ApiState.DOWN and not failed
        self.health = change.health
        self.metrics.api_up.set(1 if self.health.state is ApiState.UP else 0)
        if recovered:
            # After a declared outage, every session returns to its normal rhythm
            # now, not when its own backoff would have run out.
            self._failures.clear()
            self._paused_until.clear()
            self._api_paused_until = None
        if change.note:
            level = logging.ERROR if change.health.auth else logging.WARNING
            log.log(level if failed else logging.INFO, "%s", change.note)
        if change.event is not None:
            self.metrics.events.labels(change.event.type).inc()
            mutes = await self.db(self.store.active_mutes, now)
            routes = tuple(
                (change.event, r)
                for r in route(self.settings.rules, change.event)
                if active_mute(mutes, r.rule, None, now) is None
            )
            log.info(
                "event %s -> %s",
                change.event.type,
                ", ".join(r.target for _, r in routes) or "no rule matched",
            )
            new = await self.db(self.store.record_events, (change.event,), routes, now)
            if new:
                self.delivery.wake({r.target for _, r in routes})

    def _tick(self, session_id: str) -> None:
        """A session fell due: queue a poll unless queued, held back, or vouched for by the list."""
        if self._stopping or self._queue is None or session_id in self._in_flight:
            return
        paused = self._paused_until or self._api_paused_until is not None
        if paused and not self.poll_allowed(session_id, self.clock()):
            return
        if self.settings.discover is not None and session_id not in self._leaving:
            now = self.clock()
            state = self._states.get(session_id)
            decision = decide_fetch(
                self._listing.get(session_id),
                state.updated_at if isinstance(state, Snapshot) else None,
                self._fetched_at.get(session_id),
                self._job_interval.get(session_id) or self.settings.poll.interval,
                self.settings.poll.idle_cap,
                now,
            )
            if not decision.fetch:
                self.stats.list_skips += 1
                return
        self._enqueue(session_id)

    def _enqueue(self, session_id: str) -> bool:
        """Queue a poll of `session_id` now, unless one is queued or running already."""
        if self._stopping or self._queue is None or session_id in self._in_flight:
            return False
        state = self._states.get(session_id)
        deadline = poll_deadline(
            time.monotonic(), self._job_interval.get(session_id), self.settings.poll.interval
        )
        self._queue.put(session_id, deadline, poll_priority(state))
        self._in_flight.add(session_id)
        return True

    async def _wait_unless_stopping(self, wait: Callable[[], Any]) -> bool:
        """Await `wait()`; False when a stop cut it short."""
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await wait()
            finally:
                self._waiting.discard(scope)
        return not scope.cancelled_caught

    async def _poll_worker(self) -> None:
        """Take a token, then the most urgent queued session, and poll it."""
        queue = self._queue
        assert queue is not None
        while await queue.wait():
            if not await self._wait_unless_stopping(self.budget.acquire):
                return
            session_id = queue.pop()
            if session_id is None:
                self.budget.refund()  # another worker took the last one
                continue
            try:
                if not self._stopping:
                    await self.poll(session_id, budgeted=True)
            except Exception:  # one bad poll must not stop the others
                log.exception("poll of %s crashed", session_id, extra=context(session=session_id))
            finally:
                self._in_flight.discard(session_id)

    def _schedule(self, watched: WatchedSession, *, first: bool) -> None:
        """(Re)schedule `watched` at its current cadence; `first` spreads its first poll."""
        cadence = poll_cadence(
            self.settings.poll, watched.interval, self._states.get(watched.id), self.clock()
        )
        self._job_interval[watched.id] = cadence.interval
        if cadence.interval is None:
            self._unschedule(watched.id)
            return
        self._set_timing(watched.id, cadence.interval, first=first)

    def _set_timing(self, session_id: str, interval: timedelta, *, first: bool) -> None:
        timing = poll_timing(interval, self.settings.poll.jitter, self._rng.random())
        self.timetable.set(session_id, timing, first=first)

    def _unschedule(self, session_id: str) -> None:
        self.timetable.remove(session_id)

    def _reschedule(self, session_id: str, *, force: bool = False) -> None:
        """After a poll: move the session in the timetable to the interval its state calls for.

        Its next poll is one new interval from now; getting faster applies at once
        (activity snaps back to the fast interval on the poll that saw it).
        `force` applies new settings (a reload) even when the interval is the same.
        """
        watched = self._watched.get(session_id)
        if watched is None or self._scheduler is None or self._stopping:
            return
        cadence = poll_cadence(
            self.settings.poll, watched.interval, self._states.get(session_id), self.clock()
        )
        current = self._job_interval.get(session_id)
        if not force and not needs_reschedule(current, cadence.interval):
            return
        self.stats.reschedules += 1
        self._job_interval[session_id] = cadence.interval
        if cadence.interval is None:
            self._unschedule(session_id)
        else:
            self._set_timing(session_id, cadence.interval, first=False)
        log.debug("%s now polled every %s: %s", session_id, cadence.interval, cadence.reason)

    async def _drop(self, session_id: str) -> None:
        """Stop watching a discovered session that left the list (after its last poll)."""
        self._leaving.discard(session_id)
        if session_id in self._configured:
            return
        self._discovered_ids.discard(session_id)
        self._watched.pop(session_id, None)
        self._listing.pop(session_id, None)
        self._job_interval.pop(session_id, None)
        self._digests.pop(session_id, None)
        self.source.forget(session_id)
        self._unschedule(session_id)
        await self.db(self.store.forget_discovered, [session_id])
        log.info("session %s left the list: no longer watched", session_id)

    # --- discovery -----------------------------------------------------------------

    def _start_discovery(self) -> None:
        """Run the discovery loop while discovery is configured (at start, or after a reload)."""
        if self.settings.discover is not None and not self._discovering and self._work:
            self._discovering = True
            self._work.start_soon(self._discovery_loop)

    async def _discovery_loop(self) -> None:
        """Start a pass over the session list every `discover.interval` (sooner after a
        reload); one that takes longer is followed at once by the next.
        """
        try:
            while not self._stopping and self.settings.discover is not None:
                # Passes start every interval: a pass of 100 pages at 100 ms each
                # takes 10 s, which must not be added to the wait for the next one.
                started = anyio.current_time()
                try:
                    await self.discover_once()
                except Exception:  # a bug in one pass must not end discovery
                    log.exception("discovery pass crashed")
                settings = self.settings  # a reload may have turned discovery off
                discover = settings.discover
                if discover is None:
                    return
                now = self.clock()
                elapsed = anyio.current_time() - started
                delay = max(discover.interval.total_seconds() - elapsed, 0.0)
                paused = self._paused_until.get(DISCOVERY)
                if paused is not None:
                    delay = max(delay, (paused - now).total_seconds())
                wake = self._discover_wake

                async def pause(seconds: float = delay, event: anyio.Event = wake) -> None:
                    with anyio.move_on_after(seconds):
                        await event.wait()

                if not await self._wait_unless_stopping(pause):
                    return
        finally:
            self._discovering = False

    async def _list_all(self) -> tuple[list[ListedSession], bool] | FetchFailed:
        """Page through the list; (items, complete) or the failure that ended it."""
        items: list[ListedSession] = []
        cursor: str | None = None
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            if not await self._wait_unless_stopping(self.budget.acquire):
                return items, False
            page = await self.source.list_sessions(cursor)
            if isinstance(page, FetchFailed):
                return replace(page, reason=self.redact(page.reason))
            items.extend(page.sessions)
            self._read_moved(page.sessions)
            if page.skipped:
                log.debug("list page: %d item(s) without a usable sessionId", page.skipped)
            if page.next_cursor is None:
                return items, True
            if page.next_cursor in cursors:
                log.warning("the session list repeated a cursor; using what was read so far")
                return items, False
            cursors.add(page.next_cursor)
            cursor = page.next_cursor
        log.warning("the session list has more than %d pages; using the first ones", MAX_PAGES)
        return items, False

    def _read_moved(self, sessions: Sequence[ListedSession]) -> None:
        """Queue a read of each watched session this page shows changed, now.

        Waiting for the end of the pass would add its length (100 pages at a
        100 ms round trip: 10 s) to the time from a change to its notification.
        """
        now = self.clock()
        for item in sessions:
            if item.updated_at is None or item.session_id not in self._watched:
                continue
            mark = ListMark(to_unix_ms(item.updated_at), now)
            self._listing[item.session_id] = mark
            if listed_change(mark, _updated_at(self._states.get(item.session_id))):
                self._enqueue(item.session_id)

    def _known_facts(self, item: ListedSession) -> ListedSession:
        """A bare list item with the facts known from reading the session on its own."""
        if item.full:
            return item
        state = self._states.get(item.session_id)
        if isinstance(state, Snapshot):
            return facts_from_snapshot(state)
        return self._facts.get(item.session_id, item)

    async def _resolve(self, session_ids: Iterable[str]) -> bool:
        """Read bare items on their own to judge them; False if any read failed."""
        ok = True
        for session_id in session_ids:
            if not await self._wait_unless_stopping(self.budget.acquire):
                return False
            result = await self.source.fetch_session(session_id)
            if isinstance(result, Fetched):
                self._facts[session_id] = facts_from_snapshot(result.snapshot)
            elif isinstance(result, FetchFailed):
                self._note_throttle(result)
                ok = False
        return ok

    def _select(
        self, discover: DiscoverSettings, items: Sequence[ListedSession], now: datetime
    ) -> Selection:
        include = discover.include
        return select_sessions(
            [self._known_facts(i) for i in items],
            titles=include.titles,
            tags=include.tags,
            computers=include.computers,
            created_within=discover.created_within,
            max_sessions=discover.max_sessions,
            exclude=self._configured,
            now=now,
        )

    async def discover_once(self, *, dry_run: bool = False) -> DiscoveryReport:
        """One discovery pass: list, filter, remember new sessions, catch up moved ones.

        A failed list is a failed poll (backoff, Retry-After, API health) and
        drops nothing; only a complete listing lets sessions leave.
        """
        discover = self.settings.discover
        if discover is None:
            return DiscoveryReport()
        listing = await self._list_all()
        now = self.clock()
        if isinstance(listing, FetchFailed):
            self.stats.failed_lists += 1
            self._note_throttle(listing)
            self._back_off(DISCOVERY, discover.interval, listing, now)
            log.warning("reading the session list failed: %s", listing.reason)
            if not dry_run:
                await self._observe_health(listing, now)
            return DiscoveryReport(failure=listing, complete=False)
        items, complete = listing
        self.stats.lists += 1
        self._failures.pop(DISCOVERY, None)
        self._paused_until.pop(DISCOVERY, None)
        if not dry_run:
            await self._observe_health(ListPage((), None), now)
        return await self._take_listing(discover, items, complete, now, dry_run=dry_run)

    async def _take_listing(
        self,
        discover: DiscoverSettings,
        items: Sequence[ListedSession],
        complete: bool,
        now: datetime,
        *,
        dry_run: bool,
    ) -> DiscoveryReport:
        """Act on one listing: new sessions, baselines, leavers, and moved sessions."""
        for item in items:
            if item.updated_at is not None:
                self._listing[item.session_id] = ListMark(to_unix_ms(item.updated_at), now)
        selection = self._select(discover, items, now)
        if selection.unresolved:
            complete = await self._resolve(selection.unresolved) and complete
            selection = self._select(discover, items, now)
        if selection.capped:
            log.info("discovery: %d matching session(s) beyond max_sessions", selection.capped)
        chosen = {s.session_id: s for s in selection.chosen}
        first_at = None
        if self._first_discovery_at is None:
            created = [s.created_at for s in selection.chosen if s.created_at is not None]
            # The API's clock may run ahead of ours: nothing listed now counts as new later.
            first_at = max([now, *created])
        added = [sid for sid in chosen if sid not in self._discovered_ids]
        baselines = self._baselines(added, chosen, now) if first_at is not None else []
        new_rows = 0
        if not dry_run and (added or first_at is not None):
            new_rows = await self.db(self.store.record_discovery, now, first_at, added, baselines)
        if first_at is not None:
            self._first_discovery_at = first_at
        for baseline in baselines:
            # The listing read it as fully as a poll would: its own read is due by max_idle.
            self._states[baseline.session_id] = baseline.state
            self._fetched_at[baseline.session_id] = now
        self._discovered_ids.update(added)
        if new_rows:
            self.delivery.wake({r.target for b in baselines for _, r in b.routes})
        labels = dict(discover.labels)
        for session_id in added:
            watched = WatchedSession(id=session_id, labels=labels)
            self._watched[session_id] = watched
            if self._scheduler is not None and not self._stopping:
                self._schedule(watched, first=True)
        leaving = self._mark_leaving(chosen.keys()) if complete else []
        self._leaving -= chosen.keys()
        moved = [
            sid
            for sid in self._watched
            if sid in self._listing
            and listed_change(self._listing[sid], _updated_at(self._states.get(sid)))
        ]
        # New sessions not taken as a baseline, moved ones, and leavers are read at once.
        baseline_ids = {b.session_id for b in baselines}
        for session_id in [*[a for a in added if a not in baseline_ids], *moved, *leaving]:
            self._enqueue(session_id)
        log.debug(
            "discovery: %d listed, %d added, %d leaving, %d moved",
            len(items),
            len(added),
            len(leaving),
            len(moved),
        )
        return DiscoveryReport(
            len(items), tuple(added), tuple(leaving), tuple(moved), new_rows, complete
        )

    def _mark_leaving(self, chosen: Iterable[str]) -> list[str]:
        """Discovered sessions no longer listed (or filtered out): each gets one last poll."""
        leaving = []
        for session_id in self._discovered_ids - set(chosen) - self._configured:
            if session_id not in self._leaving:
                self._leaving.add(session_id)
                leaving.append(session_id)
        return sorted(leaving)

    def _baselines(
        self, added: Sequence[str], chosen: Mapping[str, ListedSession], now: datetime
    ) -> list[Recorded]:
        """The first discovery takes each listed session's state as its baseline.

        Nothing is sent for it, unless a rule asks for `session.discovered`.
        """
        out: list[Recorded] = []
        labels = dict(self.settings.discover.labels) if self.settings.discover else {}
        for session_id in added:
            snapshot = chosen[session_id].snapshot
            if snapshot is None or session_id in self._states:
                continue  # read on its own first (or already known): the poll does it
            ref = session_ref(
                WatchedSession(id=session_id, labels=labels),
                snapshot,
                self.settings.factory.session_url,
            )
            events = diff_states(None, snapshot, ref, now)
            routes = tuple((e, r) for e in events for r in route(self.settings.rules, e))
            out.append(Recorded(session_id, snapshot, events, routes))
        return out

    # --- lifecycle -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop; a second call stops at once."""
        if self._stop.is_set() and self._work_scope is not None:
            log.warning("second stop request: exiting without draining")
            self._work_scope.cancel()
        self._stop.set()

    async def run(  # noqa: PLR0915 - one lifecycle, start to drain, read top to bottom
        self, *, on_ready: Callable[[], None] | None = None, handle_signals: bool = True
    ) -> None:
        """Watch until stopped (SIGTERM/SIGINT or `request_stop()`), then drain and return."""
        settings = self.settings
        queue = self._queue = PollQueue()
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        endpoint = Endpoint(self._routes())
        listener = None
        if settings.http is not None:
            # Bound before anything starts: a port in use fails the start plainly.
            listener = await endpoint.listen(settings.http.host, settings.http.port)
            self.endpoint_port = bound_port(listener)
            log.info(
                "metrics and health on http://%s/metrics",
                settings.http.address(self.endpoint_port),
            )
        try:
            async with anyio.create_task_group() as outer:
                if handle_signals:
                    # Handlers are in place before READY=1: a `systemctl reload`
                    # straight after start must not meet SIGHUP's default action.
                    await outer.start(self._signals)
                if listener is not None:
                    outer.start_soon(endpoint.serve, listener)
                async with anyio.create_task_group() as work:
                    self._work_scope = work.cancel_scope
                    self._work = work
                    work.start_soon(self.delivery.run, settings.targets, self.notifiers)
                    for _ in range(settings.factory.concurrency):
                        work.start_soon(self._poll_worker)
                    self.timetable = self._new_timetable()  # a run starts a fresh one
                    self._start_discovery()
                    for warning in budget_warnings(settings):
                        log.warning("%s", warning)
                    for watched in self._watched.values():
                        self._schedule(watched, first=True)
                    work.start_soon(self.timetable.run)
                    self._start_scheduler(self._scheduler)
                    work.start_soon(self._supervise)
                    self._started = True
                    self.systemd.ready()
                    log.info(
                        "watching %d session(s), %d rule(s), %d target(s); state in %s",
                        len(self._watched),
                        len(settings.rules),
                        len(settings.targets),
                        self.store.path,
                    )
                    if on_ready is not None:
                        on_ready()
                    await self._stop.wait()
                    self.systemd.stopping()
                    log.info("stopping: finishing in-flight polls and sends")
                    if self._supervisor_scope is not None:
                        self._supervisor_scope.cancel()
                    self._stopping = True
                    self._scheduler.shutdown(wait=False)
                    self.timetable.stop()
                    for session_id in queue.close():
                        self._in_flight.discard(session_id)
                    for scope in list(self._waiting):
                        scope.cancel()
                    self.delivery.stop()
                    work.cancel_scope.deadline = anyio.current_time() + DRAIN_DEADLINE
                outer.cancel_scope.cancel()
        finally:
            queue.close()  # already closed on a clean stop; not when run() was cancelled
            self._work = None
            await self.aclose()
        log.info(
            "stopped; %d notification(s) left queued", self.store_counts()[OutboxStatus.PENDING]
        )

    def _start_scheduler(self, scheduler: AsyncIOScheduler) -> None:
        """The daemon's few periodic jobs: the rule timer and the heartbeat."""
        for job, period, job_id in (
            (self._rules_job, RULES_TICK, "__rules__"),
            (self._heartbeat, HEARTBEAT_PERIOD, "__heartbeat__"),
        ):
            scheduler.add_job(
                job,
                IntervalTrigger(seconds=period, timezone=UTC),
                id=job_id,
                max_instances=1,
                coalesce=True,
            )
        scheduler.start()

    def _timetable_cycled(self) -> None:
        self._timetable_cycle = time.monotonic()

    async def _heartbeat(self) -> None:
        """APScheduler job: proves the scheduler still fires jobs, and the timetable
        that fires polls still turns (it looks at least every second).
        """
        now = time.monotonic()
        if now - self._timetable_cycle < STALL_AFTER:
            self.progress.beat("scheduler", now)

    async def _supervise(self) -> None:
        """Keep `STATUS=` current and ping the watchdog while every component progresses."""
        interval = self.systemd.watchdog_interval()
        period = min(HEARTBEAT_PERIOD, interval) if interval else HEARTBEAT_PERIOD
        with anyio.CancelScope() as scope:
            self._supervisor_scope = scope
            while not self._stopping:
                await self.housekeeping()
                self.systemd.status(await self.status_line())
                if interval:
                    self.systemd.watchdog_if_healthy(self.progress, time.monotonic())
                await anyio.sleep(period)

    # --- what operators see ------------------------------------------------------

    async def housekeeping(self) -> None:
        """Every few seconds: write poll bookkeeping in one batch, refresh store figures.

        The write doubles as the store's writability check that `/readyz` uses.
        """
        polled, self._polled = self._polled, {}
        marks = [
            PollMark(session_id, at, outcome, self._next_poll(session_id))
            for session_id, (at, outcome) in polled.items()
        ]
        health = self.health
        meta = {
            "heartbeat_at": f"{self.clock().timestamp():.3f}",
            "api_state": str(health.state),
            "api_since": "" if health.since is None else f"{health.since.timestamp():.3f}",
            "api_reason": self.redact(health.reason),
        }
        version = self._watched_version
        if version != self._watched_written:
            meta["watched"] = json.dumps(
                [{"id": w.id, "name": w.name} for w in self._watched.values()]
            )
        try:
            await self.db(self.store.record_housekeeping, marks, meta)
            statuses = await self.db(self.store.session_statuses)
            outbox = await self.db(self.store.outbox_figures, sorted(self.settings.targets))
        except Exception as error:  # sqlite3 errors: read-only, disk full, I/O error
            for session_id, mark in polled.items():
                self._polled.setdefault(session_id, mark)  # try again next time
            reason = self.redact(str(error)) or type(error).__name__
            if reason != self._store_error:  # once per kind of failure, not every 5 s
                log.error("state database refused a write: %s", reason)  # noqa: TRY400
            self._store_error = reason
            self._store_checked_at = self.clock()
            return
        if self._store_error is not None:
            log.info("state database writable again")
        self._store_error = None
        self._store_checked_at = self.clock()
        self._watched_written = version
        sessions: dict[str, int] = {}
        for session_id in self._watched:
            status, gone = statuses.get(session_id, (None, False))
            bucket = status_bucket(status, gone=gone)
            sessions[bucket] = sessions.get(bucket, 0) + 1
        oldest = outbox.oldest_pending_at
        self.metrics.set_store_figures(
            StoreFigures(
                sessions=sessions,
                pending=outbox.pending,
                dead=outbox.dead,
                oldest_pending_at=None if oldest is None else oldest.timestamp(),
            )
        )

    def _next_poll(self, session_id: str) -> datetime | None:
        due_in = self.timetable.due_in(session_id)
        at = None if due_in is None else self.clock() + timedelta(seconds=due_in)
        for paused in (self._paused_until.get(session_id), self._api_paused_until):
            if paused is not None and (at is None or paused > at):
                at = paused
        return at

    def longest_interval(self) -> timedelta:
        """The longest poll interval of any watched session."""
        default = self.settings.poll.interval
        return max((w.interval or default for w in self._watched.values()), default=default)

    def readiness(self) -> Readiness:
        """Whether the watcher does its job now (`/readyz`), with a one-line reason."""
        return readiness(
            ReadinessInputs(
                started=self._started,
                stopping=self._stopping,
                sessions=len(self._watched),
                longest_interval=self.longest_interval(),
                last_success=self._last_success,
                last_failure_reason=self._last_failure,
                store_checked_at=self._store_checked_at,
                store_error=self._store_error,
                store_check_period=timedelta(seconds=HEARTBEAT_PERIOD),
            ),
            self.clock(),
        )

    def _routes(self) -> dict[str, Callable[[Request], Response]]:
        def metrics(request: Request) -> Response:
            body, content_type = self.metrics.exposition(request.accept)
            return Response(200, body, content_type)

        def healthz(request: Request) -> Response:
            return text(200, "ok")

        def readyz(request: Request) -> Response:
            answer = self.readiness()
            return text(200 if answer.ready else 503, answer.reason)

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}

    async def status_line(self) -> str:
        """One line for `systemctl status`: sessions, last poll, outbox, API state."""
        counts = await self.db(self.store.counts)
        last = self.stats.last_poll_at
        ago = "never" if last is None else f"{(self.clock() - last).total_seconds():.0f}s ago"
        line = (
            f"watching {len(self._watched)} session(s); last poll {ago}; "
            f"budget {self.budget.bucket.rate:.3g}/s; outbox "
            f"{counts[OutboxStatus.PENDING]} pending, {counts[OutboxStatus.DEAD]} dead; "
            f"API {self.health.state}"
        )
        return f"{line}; {self._status_note}" if self._status_note else line

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.request_stop()

    async def reload(self) -> bool:
        """Re-read the config; apply it only if it is valid in full. True when applied."""
        if self._reload_settings is None:
            log.warning("reload requested, but this watcher has no config file to re-read")
            return False
        self.systemd.reloading()
        try:
            new = await anyio.to_thread.run_sync(self._reload_settings)
        except Exception as error:  # ConfigError lists every problem; keep running the old config
            log.error("reload failed, keeping the running config:\n%s", error)  # noqa: TRY400
            lines = str(error).splitlines()
            self._status_note = f"reload failed: {lines[0] if lines else type(error).__name__}"
            self.metrics.config_loaded(success=False)
            self.systemd.status(await self.status_line())
            self.systemd.ready()
            return False
        failpoint(Failpoint.DURING_RELOAD)
        self.metrics.config_loaded(success=True)
        self._status_note = ""
        for key in ("http", "log_format"):
            if getattr(new, key) != getattr(self.settings, key):
                log.warning("%s changed: that takes effect on the next restart", key)
        self.apply_settings(new)
        self.systemd.ready()
        log.info(
            "reloaded: %d session(s), %d rule(s), %d target(s)",
            len(new.sessions),
            len(new.rules),
            len(new.targets),
        )
        return True

    def apply_settings(self, new: Settings) -> None:
        """Switch to `new`: start and stop session jobs, swap rules, targets and client."""
        old = self.settings
        self.settings = new
        if new.factory != old.factory:
            self._retired.append(self.source)
            self.source = self._client(new)
        for name, target in new.targets.items():
            if old.targets.get(name) != target or name not in self.notifiers:
                if name in self.notifiers:
                    self._retired.append(self.notifiers[name])
                self.notifiers[name] = build_notifier(target)
        for name in set(self.notifiers) - set(new.targets):
            self._retired.append(self.notifiers.pop(name))
        self.delivery.set_targets(new.targets, self.notifiers)
        if new.factory.max_requests_per_second != old.factory.max_requests_per_second:
            self.budget.set_rate(new.factory.max_requests_per_second)
        self._configured = frozenset(w.id for w in new.sessions)
        watched = self._watch_list(new)
        for session_id in set(self._watched) - set(watched):
            self._digests.pop(session_id, None)
            self.source.forget(session_id)
            self._unschedule(session_id)
            self._job_interval.pop(session_id, None)
        changed = [
            w for w in watched.values() if self._watched.get(w.id) != w or new.poll != old.poll
        ]
        self._watched = watched
        self._watched_version += 1
        if self._scheduler is not None:  # running: otherwise run() schedules every session
            for w in changed:
                if w.id not in self.timetable:
                    self._schedule(w, first=w.id not in self._in_flight)
                else:
                    self._reschedule(w.id, force=True)
        if new.discover is not None and new.discover != old.discover:
            self._discover_wake.set()  # the new filter applies now, not a whole interval later
            self._discover_wake = anyio.Event()
        self._start_discovery()

    async def aclose(self) -> None:
        """Close clients, notifiers and the store."""
        with anyio.CancelScope(shield=True):
            for closable in [self.source, *self.notifiers.values(), *self._retired]:
                try:
                    await closable.aclose()
                except Exception:  # closing must not hide the real outcome
                    log.debug("closing %r failed", closable, exc_info=True)
            self._retired.clear()
            if self.recorder is not None:
                self.recorder.close()
            if self._delivery_store is not self.store:
                self._delivery_store.close()

    def store_counts(self) -> Mapping[OutboxStatus, int]:
        """Outbox depth by status."""
        return self.store.counts()

    # --- one-shot ------------------------------------------------------------------

    async def poll_all(self, *, dry_run: bool = False) -> list[PollReport]:
        """Poll every watched session once, concurrently (bounded by the client and budget).

        With discovery on, the session list is read first.
        """
        reports: list[PollReport] = []
        if self.settings.discover is not None:
            await self.discover_once(dry_run=dry_run)

        async def one(session_id: str) -> None:
            reports.append(await self.poll(session_id, dry_run=dry_run))

        async with anyio.create_task_group() as tg:
            for session_id in self._watched:
                tg.start_soon(one, session_id)
        return reports

    async def deliver_due(self) -> int:
        """Send every notification due now, once; returns how many were attempted."""
        return await self.delivery.drain_once(self.settings.targets, self.notifiers)


def _log_decisions(session_id: str, decisions: Sequence[Decision]) -> None:
    for decision in decisions:
        if decision.outcome is not Outcome.SENT:
            log.info(
                "rule %s: %s %s %s: %s",
                decision.rule,
                decision.event.type,
                session_id,
                decision.outcome,
                decision.reason,
            )


def _updated_at(state: SessionState | None) -> datetime | None:
    return state.updated_at if isinstance(state, Snapshot) else None


def _log_events(report: PollReport) -> None:
    decided = {d.event.id for d in report.decisions}
    for event in report.events:
        targets = [r.target for e, r in report.routes if e.id == event.id]
        log.info(
            "event %s %s %s -> %s",
            event.type,
            report.session_id,
            _describe(event),
            ", ".join(targets)
            or ("not queued (see the rule lines)" if event.id in decided else "no rule matched"),
            extra=context(session=report.session_id, event_id=event.id, type=str(event.type)),
        )


def _describe(event: Event) -> str:
    data = event.data
    if event.type is EventType.DIGEST:
        return f"window={data.get('window')} count={data.get('count')}"
    if "from" in data:
        return f"{data['from']} -> {data['to']}"
    return " ".join(f"{k}={v}" for k, v in data.items())


async def run_until(
    watcher: Watcher, stop_after: float | None, on_ready: Callable[[], None] | None = None
) -> None:
    """Run `watcher`, stopping it after `stop_after` seconds when given (demo, tests)."""
    async with anyio.create_task_group() as tg:
        if stop_after is not None:

            async def stopper() -> None:
                await anyio.sleep(stop_after)
                watcher.request_stop()

            tg.start_soon(stopper)
        await watcher.run(on_ready=on_ready)
        tg.cancel_scope.cancel()
