"""The supervisor: what operators and systemd see of a running watcher.

It owns housekeeping (poll bookkeeping written in one batch, store figures
refreshed; the write doubles as the store's writability check), readiness
(`/readyz`), the `STATUS=` line, the HTTP routes, and the watchdog: each
component beats while it progresses (the heartbeat beats for the scheduler
only while the poll timetable turns), and a component silent for
`STALL_AFTER` seconds withholds the watchdog ping.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio

from watcher.core.figures import Readiness, ReadinessInputs, readiness, status_bucket
from watcher.core.model import Gone, SessionState
from watcher.core.text import describe_error
from watcher.daemon.health import HealthWatch
from watcher.daemon.live import Part, Wiring
from watcher.daemon.scheduler import PollScheduler
from watcher.ops.endpoint import Request, Response, text
from watcher.ops.metrics import StoreFigures
from watcher.ops.systemd import ProgressWatchdog, SystemdNotifier
from watcher.store import OutboxFigures, PollMark

log = logging.getLogger("watcher.daemon")
HEARTBEAT_PERIOD = 5.0  # the heartbeat, STATUS= updates, housekeeping
STALL_AFTER = 60.0  # a component silent this long withholds the watchdog ping
COMPONENTS = ("scheduler", "delivery")


def state_bucket(state: SessionState | None) -> str:
    """The `status` label of a session's last known state (see `status_bucket`)."""
    if isinstance(state, Gone):
        return status_bucket(None if state.last is None else state.last.status, gone=True)
    return status_bucket(None if state is None else state.status, gone=False)


class Supervisor(Part):
    """Housekeeping, readiness, the status line, the watchdog and the HTTP routes."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        health: HealthWatch,
        scheduler: PollScheduler,
        systemd: SystemdNotifier,
    ) -> None:
        super().__init__(wiring)
        self.health = health
        self.scheduler = scheduler
        self.systemd = systemd
        self.progress = ProgressWatchdog(STALL_AFTER)
        for component in COMPONENTS:
            self.progress.register(component, time.monotonic())
        self.note = ""  # appended to the status line (a failed reload says so)
        self.started = False  # READY=1 was sent
        self._store_checked_at: datetime | None = None
        self._store_error: str | None = None
        self._watched_written = 0  # the book's watch list version last written
        self._scope: anyio.CancelScope | None = None
        self._outbox: OutboxFigures | None = None  # the last housekeeping's figures

    def mark_started(self) -> None:
        """The run is up (READY=1 sent): readiness now looks at polls and the store."""
        self.started = True

    def heartbeat(self, now: float | None = None) -> None:
        """Beat for the scheduler while the poll timetable still turns (it looks at least
        every second); `now` is `time.monotonic()` unless given.
        """
        now = time.monotonic() if now is None else now
        if now - self.scheduler.last_cycle < STALL_AFTER:
            self.progress.beat("scheduler", now)

    async def run_heartbeat(self) -> None:
        """Beat every `HEARTBEAT_PERIOD` seconds until the run stops: a loop that stops
        turning stops beating, and the watchdog ping is withheld.
        """

        async def beat() -> None:
            self.heartbeat()

        await self.live.every(HEARTBEAT_PERIOD, beat, what="heartbeat")

    async def supervise(self) -> None:
        """Keep `STATUS=` current and ping the watchdog while every component progresses."""
        interval = self.systemd.watchdog_interval()
        period = min(HEARTBEAT_PERIOD, interval) if interval else HEARTBEAT_PERIOD
        with anyio.CancelScope() as scope:
            self._scope = scope
            while not self.live.stopping:
                try:
                    await self.housekeeping()
                    self.systemd.status(await self.status_line())
                    if interval:
                        self.systemd.watchdog_if_healthy(self.progress, time.monotonic())
                except Exception:  # a bug: this round pings no watchdog; the next tries again
                    log.exception("supervision round failed")
                await anyio.sleep(period)

    def stop(self) -> None:
        """Stop supervising (a stop is under way)."""
        if self._scope is not None:
            self._scope.cancel()

    async def housekeeping(self) -> None:
        """Every few seconds: write poll bookkeeping in one batch, refresh store figures.

        The write doubles as the store's writability check that `/readyz` uses.
        Each round's wall time, failed rounds included, goes to
        `factory_watcher_housekeeping_seconds`: a cost that grows with history
        shows there first.
        """
        started = time.perf_counter()
        try:
            await self._housekeeping_round()
        finally:
            self.metrics.housekeeping_duration.observe(time.perf_counter() - started)

    async def _housekeeping_round(self) -> None:
        stats = self.stats
        polled, stats.polled = stats.polled, {}
        marks = [
            PollMark(session_id, at, outcome, self.next_poll(session_id))
            for session_id, (at, outcome) in polled.items()
        ]
        health = self.health.health
        meta = {
            "heartbeat_at": f"{self.clock().timestamp():.3f}",
            "api_state": str(health.state),
            "api_since": "" if health.since is None else f"{health.since.timestamp():.3f}",
            "api_reason": self.live.redact(health.reason),
        }
        version = self.book.version
        watched: list[str] | None = None
        if version != self._watched_written:
            watched = list(self.book.watched)
            meta["watched"] = json.dumps(
                [{"id": w.id, "name": w.name} for w in self.book.watched.values()]
            )
        try:
            await self.db(self.store.record_housekeeping, marks, meta, watched)
            outbox = await self.db(self.store.outbox_figures, sorted(self.live.settings.targets))
        except Exception as error:  # sqlite3 errors: read-only, disk full, I/O error
            for session_id, mark in polled.items():
                stats.polled.setdefault(session_id, mark)  # try again next time
            reason = self.live.redact(str(error)) or type(error).__name__
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
        self._outbox = outbox
        sessions: dict[str, int] = {}
        for session_id in self.book.watched:
            # The book holds every watched session's last state: no store scan needed.
            bucket = state_bucket(self.book.state(session_id))
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

    def next_poll(self, session_id: str) -> datetime | None:
        """When `session_id` is next polled: its timetable slot, or later if held back."""
        due_in = self.scheduler.timetable.due_in(session_id)
        at = None if due_in is None else self.clock() + timedelta(seconds=due_in)
        return self.book.backoff.resume_at(session_id, at)

    def longest_interval(self) -> timedelta:
        """The longest poll interval of any watched session."""
        default = self.live.settings.poll.interval
        return max((w.interval or default for w in self.book.watched.values()), default=default)

    def readiness(self) -> Readiness:
        """Whether the watcher does its job now (`/readyz`), with a one-line reason."""
        stats = self.stats
        return readiness(
            ReadinessInputs(
                started=self.started,
                stopping=self.live.stopping,
                sessions=len(self.book.watched),
                longest_interval=self.longest_interval(),
                last_success=stats.last_success,
                last_failure_reason=stats.last_failure,
                store_checked_at=self._store_checked_at,
                store_error=self._store_error,
                store_check_period=timedelta(seconds=HEARTBEAT_PERIOD),
            ),
            self.clock(),
        )

    def routes(self) -> dict[str, Callable[[Request], Response]]:
        """The HTTP routes: `/metrics`, `/healthz`, `/readyz`."""

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
        """One line for `systemctl status`: sessions, last poll, outbox, API state.

        The outbox figures are housekeeping's (index lookups of pending and dead
        rows), not a count of every row ever queued. Before housekeeping has them
        they are read here; a store that refuses that read makes them unknown, never
        an error (the line is what tells an operator something is wrong).
        """
        if self._outbox is None:
            try:
                self._outbox = await self.db(
                    self.store.outbox_figures, sorted(self.live.settings.targets)
                )
            except Exception as error:
                log.debug("outbox figures unknown: %s", self.live.redact(describe_error(error)))
        outbox = self._outbox
        figures = (
            "unknown"
            if outbox is None
            else f"{sum(outbox.pending.values())} pending, {sum(outbox.dead.values())} dead"
        )
        last = self.stats.last_poll_at
        ago = "never" if last is None else f"{(self.clock() - last).total_seconds():.0f}s ago"
        line = (
            f"watching {len(self.book.watched)} session(s); last poll {ago}; "
            f"budget {self.budget.bucket.rate:.3g}/s; outbox {figures}; "
            f"API {self.health.health.state}"
        )
        return f"{line}; {self.note}" if self.note else line
