"""Scheduled reports: each report of `reports:` runs once per scheduled time, while the
daemon runs, across restarts and crashes.

One anyio loop in the run's task group (not APScheduler's own scheduler, whose
tasks would live outside the run's task groups) sleeps until the next time any
report is scheduled (`watcher.config.cron`) or a reload wakes it. On each
wake it looks at every report: `watcher.core.reportclock` decides from the
stored last run whether to run it now (the latest time due within its
misfire grace, missed ones folded in), skip times too late to send (a log
line), or wait. A run reads the window's history from the store, builds the
report (`watcher.core.report`), and records its last run, event and outbox
rows in one transaction (`record_report`), which records nothing when that
time or a later one is already stored: a restart, or a second daemon on the
same state, never queues a scheduled time twice. Then delivery is woken.

A report that fails (a store error, a bug met in one report's content) is
logged and looked at again `RETRY_AFTER` later, within its grace; the other
reports and the daemon go on. A reload adds, removes and reschedules reports:
a report added or given a new schedule by a reload starts from that moment
(like a new cron entry, it does not catch up times before it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import anyio

from watcher.config.cron import fire_times, fire_times_between
from watcher.core.report import Report, build_report, report_event, report_rule
from watcher.core.reportclock import Run, Skip, Wait, decide, scan_from
from watcher.core.rules import Route
from watcher.core.settings import ReportSpec
from watcher.core.text import describe_error
from watcher.daemon.live import Part, Wiring
from watcher.ops.logs import context

log = logging.getLogger("watcher.daemon")

RETRY_AFTER = timedelta(seconds=30)  # a report that failed is looked at again this soon
MAX_SLEEP = 60.0  # seconds: the wall clock is looked at again at least this often
MIN_SLEEP = 0.05  # seconds: never a busy loop, whatever the clock says
MAX_DUE = 100  # scheduled times looked at per report and wake (only the latest matters)


def _schedule_of(spec: ReportSpec) -> tuple[str, str]:
    return spec.schedule, spec.timezone


class ReportPart(Part):
    """Runs every scheduled report at its times; `run()` until the daemon stops."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        build: Callable[..., Report] = build_report,
        sleep_bounds: tuple[float, float] = (MIN_SLEEP, MAX_SLEEP),
    ) -> None:
        """`build` makes a report's content (`core.report.build_report`; a test passes a
        failing one); `sleep_bounds` are the shortest and longest sleep between looks."""
        super().__init__(wiring)
        self._build = build
        self._min_sleep, self._max_sleep = sleep_bounds
        # The schedules in force, to tell a reload's changes.
        self._schedules = {s.name: _schedule_of(s) for s in self.live.settings.reports}
        # Per report, a time up to which nothing is due: the latest time skipped as too
        # late, or the moment a reload added or rescheduled it.
        self._floors: dict[str, datetime] = {}
        self._retry_at: dict[str, datetime] = {}  # a report that failed, looked at again then
        self._poke: anyio.Event | None = None  # made by run(), inside the event loop

    def reschedule(self) -> None:
        """Apply the settings in force (a reload): added, removed and rescheduled reports
        take effect now; the loop wakes at once to work out its next time."""
        now = self.clock()
        reports = {s.name: s for s in self.live.settings.reports}
        for name, spec in reports.items():
            before = self._schedules.get(name)
            if before != _schedule_of(spec):
                self._floors[name] = now
                self._retry_at.pop(name, None)
                log.info(
                    "report %s: %s (%s %s)",
                    name,
                    "added" if before is None else "rescheduled",
                    spec.schedule,
                    spec.timezone,
                )
                self._announce(spec)
        for name in set(self._schedules) - set(reports):
            log.info("report %s: removed", name)
            self._floors.pop(name, None)
            self._retry_at.pop(name, None)
        self._schedules = {name: _schedule_of(s) for name, s in reports.items()}
        if self._poke is not None:
            self._poke.set()

    async def run(self) -> None:
        """Look at the reports at each scheduled time (and on reload) until the run stops."""
        self._poke = anyio.Event()
        for spec in self.live.settings.reports:
            self._announce(spec)
        while not self.live.stopping:
            try:
                until = await self.turn()
            except Exception as error:  # the store's report runs could not be read
                log.warning(
                    "reports: cannot look at the schedule, trying again in %ds: %s",
                    RETRY_AFTER.total_seconds(),
                    describe_error(error),
                )
                until = self.clock() + RETRY_AFTER
            if until is None:
                delay = self._max_sleep
            else:
                left = (until - self.clock()).total_seconds()
                delay = min(max(left, self._min_sleep), self._max_sleep)
            if not await self.live.unless_stopping(partial(self._sleep, delay)):
                return

    def _announce(self, spec: ReportSpec) -> None:
        """Log when `spec` runs next (a calendar that cannot say is logged, never raised)."""
        try:
            upcoming = fire_times(spec, self.clock(), 1)
        except Exception as error:  # checked at load; a bug here must not end the run
            log.warning("report %s: no next run: %s", spec.name, describe_error(error))
            return
        when = upcoming[0].isoformat() if upcoming else "never"
        log.info("report %s: next run %s", spec.name, when, extra=context(report=spec.name))

    async def _sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a reload pokes the loop."""
        poke = self._poke
        if poke is None:
            await anyio.sleep(seconds)
            return
        with anyio.move_on_after(seconds):
            await poke.wait()
        if poke.is_set():
            self._poke = anyio.Event()

    async def turn(self) -> datetime | None:
        """Look at every report now: run, skip or wait each; when the next one is due."""
        reports = self.live.settings.reports
        if not reports:
            return None
        now = self.clock()
        runs = await self.db(self.store.report_runs)
        wakes: list[datetime] = []
        for spec in reports:
            retry = self._retry_at.get(spec.name)
            if retry is not None and retry > now:
                wakes.append(retry)
                continue
            try:
                until = await self._one(spec, runs.get(spec.name), now)
            except Exception:  # one report's failure must not stop the others
                retry = now + RETRY_AFTER
                self._retry_at[spec.name] = retry
                log.exception(
                    "report %s failed, trying again at %s",
                    spec.name,
                    retry.isoformat(timespec="seconds"),
                    extra=context(report=spec.name),
                )
                wakes.append(retry)
                continue
            self._retry_at.pop(spec.name, None)
            if until is not None:
                wakes.append(until)
        return min(wakes, default=None)

    async def _one(self, spec: ReportSpec, last: datetime | None, now: datetime) -> datetime | None:
        """Decide and act for one report; when it is next due."""
        floor = self._floors.get(spec.name)
        start = scan_from(last, floor, now, spec.misfire_grace)
        due = fire_times_between(spec, start, now, MAX_DUE)
        upcoming = fire_times(spec, now, 1)
        next_fire = upcoming[0] if upcoming else None
        decision = decide(spec, last_run=last, floor=floor, due=due, now=now, next_fire=next_fire)
        if isinstance(decision, Wait):
            return decision.until
        if isinstance(decision, Skip):
            self._floors[spec.name] = decision.scheduled_at
            self.metrics.reports_skipped.labels(spec.name, "too_old").inc()
            log.warning(
                "report %s: skipped: %s",
                spec.name,
                decision.reason,
                extra=context(report=spec.name),
            )
            return next_fire
        await self._run(spec, decision, now)
        return next_fire

    async def _run(self, spec: ReportSpec, run: Run, now: datetime) -> None:
        """Build the report for `run` and record it with its rows (once per time)."""
        settings = self.live.settings
        # Read on a thread of its own, not the database thread: the store serialises the
        # read itself (SQLite's lock, PostgreSQL's pool), and decoding a busy day's
        # events (about a second for 50,000) then holds back no poll.
        history = await anyio.to_thread.run_sync(
            partial(self.store.report_history, run.start, run.end)
        )
        # Pure but not small: off the event loop, so polls and sends go on meanwhile.
        report = await anyio.to_thread.run_sync(
            partial(
                self._build, spec, history, run.start, run.end, now, settings.factory.session_url
            )
        )
        event = report_event(spec, report, run.scheduled_at)
        empty = report.is_empty and spec.skip_empty
        rule = report_rule(spec.name)  # bodies and the outbox say `report:NAME`
        routes = () if empty else tuple((event, Route(rule, t)) for t in spec.notify)
        new = await self.db(
            self.store.record_report, spec.name, run.scheduled_at, event, routes, now
        )
        when = run.scheduled_at.isoformat(timespec="seconds")
        window = (
            f"{run.start.isoformat(timespec='seconds')} to {run.end.isoformat(timespec='seconds')}"
        )
        extra = context(report=spec.name, event_id=event.id)
        if empty:
            self.metrics.reports_skipped.labels(spec.name, "empty").inc()
            log.info(
                "report %s for %s: nothing happened (%s); not sent (skip_empty)",
                spec.name,
                when,
                window,
                extra=extra,
            )
            return
        if not new:
            log.info("report %s for %s: already recorded; not queued again", spec.name, when)
            return
        self.metrics.reports_sent.labels(spec.name).inc()
        self.metrics.events.labels(event.type).inc()
        log.info(
            "report %s for %s -> %s (%s%s)",
            spec.name,
            when,
            ", ".join(spec.notify),
            window,
            "" if run.reason == "due" else f"; {run.reason}",
            extra=extra,
        )
        self.wake(set(spec.notify))
