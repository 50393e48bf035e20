"""The composition root: `Watcher` wires the parts of one watcher and runs them.

The parts, each in its own module: the session book and backoff
(`watcher.poll.book`, `watcher.poll.backoff`), the poller (`poller`), the poll
scheduler with its timetable, queue and workers (`scheduler`), API health
(`health`), the discovery loop (`discovery`), the rule timer (`ruletimer`), the
supervisor (`supervisor`: housekeeping, readiness, status, watchdog, HTTP
routes), the pruner (`pruner`: retention), scheduled reports (`reports`) and
the reloader (`reloader`); what
they share lives in `live`. Delivery renders at send time
(`watcher.delivery.rendering`) and adds the last answer
(`watcher.delivery.answers`). `Watcher` keeps construction, the run's lifecycle
and the one-shot `poll_all`/`deliver_due`; the rest of its surface delegates.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial

import anyio
from anyio.abc import TaskStatus

from watcher.core.cadence import budget_warnings
from watcher.core.card import CardRenderer
from watcher.core.figures import Readiness
from watcher.core.settings import Settings, Target
from watcher.daemon.discovery import DiscoveryLoop, DiscoveryReport
from watcher.daemon.health import HealthWatch
from watcher.daemon.live import Live, P, R, WatcherStats, Wiring
from watcher.daemon.poller import Poller
from watcher.daemon.pruner import Pruner
from watcher.daemon.reloader import Reloader, client_for
from watcher.daemon.reports import ReportPart
from watcher.daemon.ruletimer import RULES_TICK, RuleTimer
from watcher.daemon.scheduler import PollScheduler
from watcher.daemon.supervisor import HEARTBEAT_PERIOD, STALL_AFTER, Supervisor
from watcher.delivery import DeliveryWorker, Render
from watcher.delivery.answers import LastAnswers
from watcher.delivery.hooks import SendGate
from watcher.delivery.rendering import SendTimeRenderer
from watcher.intake.poll import PollReport, apply_poll, next_state
from watcher.intake.tick import TickReport
from watcher.notifiers import build_notifier
from watcher.notifiers.base import Notifier
from watcher.ops.endpoint import Endpoint, bound_port
from watcher.ops.metrics import Metrics
from watcher.ops.systemd import SystemdNotifier
from watcher.poll.api import RequestBudget, SessionSource
from watcher.poll.backoff import Backoff
from watcher.poll.book import SessionBook
from watcher.poll.queue import PollQueue
from watcher.poll.recorder import PollRecorder
from watcher.store import OutboxStatus, Store
from watcher.store.open import open_store

__all__ = [
    "HEARTBEAT_PERIOD",
    "RULES_TICK",
    "STALL_AFTER",
    "DiscoveryReport",
    "P",
    "PollQueue",
    "PollReport",
    "R",
    "Watcher",
    "WatcherStats",
    "apply_poll",
    "next_state",
    "run_until",
]

log = logging.getLogger("watcher.daemon")
DRAIN_DEADLINE = 5.0


class Watcher:
    """One watcher: polls its sessions, records transitions, delivers notifications."""

    def __init__(
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
        cards: Callable[[Target], CardRenderer] | None = None,
        recorder: PollRecorder | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        make_notifier: Callable[[Target], Notifier] = build_notifier,
        gate: SendGate | None = None,
    ) -> None:
        self.recorder = recorder or (
            PollRecorder(settings.record_path) if settings.record_path else None
        )
        self.clock = clock
        rng = rng or random.Random()
        self.store: Store = store or open_store(settings)
        store = self.store
        self.live = live = Live(settings, source or client_for(settings))
        self.notifiers: dict[str, Notifier] = dict(
            notifiers or {name: make_notifier(t) for name, t in settings.targets.items()}
        )
        self._open_delivery_store()
        self.systemd = systemd or SystemdNotifier.from_env()
        if metrics is None:  # one watcher alone always leads
            metrics = Metrics()
            metrics.leader.set(1)
        self.metrics = metrics
        self.budget = budget = RequestBudget(settings.factory.max_requests_per_second)
        self.stats = stats = WatcherStats()
        self.answers = LastAnswers(
            settings=lambda: live.settings,
            source=live.borrow,
            give_back=live.give_back,
            budget=budget,
            redact=live.redact,
        )
        renderer = SendTimeRenderer(lambda: live.settings)
        self.delivery = DeliveryWorker(
            self._delivery_store,
            clock=clock,
            jitter=rng.random,
            db=self._delivery_db,
            on_progress=lambda: self.supervisor.progress.beat("delivery", time.monotonic()),
            redact=live.redact,
            render=render or renderer.message,
            metrics=metrics,
            enrich=self.answers.add,
            cards=cards or renderer.cards,
            gate=gate,
        )
        wake = self.delivery.wake
        found = store.discovered()
        self.book = book = SessionBook(
            {},
            discovered=found.session_ids,
            first_discovery_at=found.first_at,
            backoff=Backoff(rng.random),
        )
        book.watch(settings)
        load_watched_states(store, book, clock())
        # `self.db` is bound here: a subclass's `db` sees every part's store call.
        wiring = Wiring(live, book, store, self.db, budget, stats, metrics, clock, wake)
        self.health = health = HealthWatch(wiring)
        self.scheduler = scheduler = PollScheduler(wiring, rng)
        self.poller = Poller(wiring, health=health, scheduler=scheduler, recorder=self.recorder)
        self.discovery = DiscoveryLoop(wiring, health=health, scheduler=scheduler)
        self.rules = RuleTimer(wiring)
        self.pruner = Pruner(wiring)
        self.reports = ReportPart(wiring)
        self.supervisor = Supervisor(
            wiring, health=health, scheduler=scheduler, systemd=self.systemd
        )
        self.reloader = Reloader(
            wiring,
            read=reload,
            scheduler=scheduler,
            discovery=self.discovery,
            delivery=self.delivery,
            notifiers=self.notifiers,
            supervisor=self.supervisor,
            make_notifier=make_notifier,
            reports=self.reports,
        )
        self._db_limiter = anyio.CapacityLimiter(1)
        self._delivery_limiter = anyio.CapacityLimiter(1)
        self._stop = anyio.Event()
        self._work_scope: anyio.CancelScope | None = None
        self.endpoint_port: int | None = None

    def _open_delivery_store(self) -> None:
        """Delivery's own handle on the store, and where the state lives (for the log).

        On SQLite it is a second connection with its own database thread: in WAL
        mode delivery reads and marks rows while polls commit, so a burst of sends
        never queues behind polls, and its marks need no fsync each (see
        `SqliteStore`): a burst of a thousand sends would otherwise wait for a
        thousand flushes.
        """
        self.state_location = self.store.location
        self._delivery_store = self.store.for_delivery()

    @property
    def settings(self) -> Settings:
        """The settings in force (a reload replaces them)."""
        return self.live.settings

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

    # --- the parts' surface, for the commands, the demo and the tests ---------------

    async def poll(
        self, session_id: str, *, dry_run: bool = False, budgeted: bool = False
    ) -> PollReport:
        """Poll one session now (see `Poller.poll`)."""
        return await self.poller.poll(session_id, dry_run=dry_run, budgeted=budgeted)

    def poll_allowed(self, session_id: str, now: datetime) -> bool:
        """Whether backoff or a Retry-After currently holds back polls of `session_id`."""
        return self.book.backoff.allowed(session_id, now)

    async def discover_once(self, *, dry_run: bool = False) -> DiscoveryReport:
        """One discovery pass now (see `DiscoveryLoop.discover_once`)."""
        return await self.discovery.discover_once(dry_run=dry_run)

    async def tick_rules(self) -> TickReport:
        """Evaluate time-based rules and release due digests now."""
        return await self.rules.tick()

    async def housekeeping(self) -> None:
        """Write poll bookkeeping and refresh store figures now (see `Supervisor`)."""
        await self.supervisor.housekeeping()

    def readiness(self) -> Readiness:
        """Whether the watcher does its job now (`/readyz`), with a one-line reason."""
        return self.supervisor.readiness()

    async def reload(self) -> bool:
        """Re-read the config; apply it only if it is valid in full. True when applied."""
        return await self.reloader.reload()

    def apply_settings(self, new: Settings) -> None:
        """Switch to `new` settings (see `Reloader.apply`)."""
        self.reloader.apply(new)

    def store_counts(self) -> Mapping[OutboxStatus, int]:
        """Outbox depth by status."""
        return self.store.counts()

    # --- lifecycle -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop; a second call stops at once."""
        if self._stop.is_set() and self._work_scope is not None:
            log.warning("second stop request: exiting without draining")
            self._work_scope.cancel()
        self._stop.set()

    async def run(
        self,
        *,
        on_ready: Callable[[], None] | None = None,
        handle_signals: bool = True,
        serve_http: bool = True,
    ) -> None:
        """Watch until stopped (SIGTERM/SIGINT or `request_stop()`), then drain and return.

        Without `serve_http` the owner serves `/metrics` and health (a replica does,
        across its terms as leader).
        """
        settings = self.settings
        queue = self.scheduler.open()
        endpoint = Endpoint(self.supervisor.routes())
        listener = None
        if settings.http is not None and serve_http:
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
                    await self._start(work, on_ready)
                    await self._stop.wait()
                    self.systemd.stopping()
                    log.info("stopping: finishing in-flight polls and sends")
                    self.supervisor.stop()
                    self.live.stop()
                    self.scheduler.stop()
                    self.delivery.stop()
                    work.cancel_scope.deadline = anyio.current_time() + DRAIN_DEADLINE
                outer.cancel_scope.cancel()
        finally:
            queue.close()  # already closed on a clean stop; not when run() was cancelled
            self.discovery.attach(None)
            self.reloader.attach(None)
            await self.aclose()
        log.info(
            "stopped; %d notification(s) left queued", self.store_counts()[OutboxStatus.PENDING]
        )

    async def _start(self, work: anyio.abc.TaskGroup, on_ready: Callable[[], None] | None) -> None:
        """Start every part in `work`, then tell systemd (and `on_ready`) the watcher is up."""
        settings = self.settings
        work.start_soon(self.delivery.run, settings.targets, self.notifiers)
        poll = partial(self.poller.poll, budgeted=True)
        self.scheduler.start(work, poll, settings.factory.concurrency)
        self.discovery.attach(work)
        self.reloader.attach(work)  # replaced clients and notifiers close once unused
        self.discovery.start()
        for warning in budget_warnings(settings):
            log.warning("%s", warning)
        self.scheduler.schedule_all()
        work.start_soon(self.scheduler.timetable.run)
        work.start_soon(self.rules.run)  # fixed ticks: plain loops that end with the run
        work.start_soon(self.pruner.run)
        work.start_soon(self.reports.run)
        work.start_soon(self.supervisor.run_heartbeat)
        work.start_soon(self.supervisor.supervise)
        self.supervisor.mark_started()
        self.systemd.ready()
        log.info(
            "watching %d session(s), %d rule(s), %d target(s); state in %s",
            len(self.book.watched),
            len(settings.rules),
            len(settings.targets),
            self.state_location,
        )
        if on_ready is not None:
            on_ready()

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.request_stop()

    async def aclose(self) -> None:
        """Close clients, notifiers and the store."""
        with anyio.CancelScope(shield=True):
            retired = self.reloader.retired
            for closable in [self.live.source, *self.notifiers.values(), *retired]:
                try:
                    await closable.aclose()
                except Exception:  # closing must not hide the real outcome
                    log.debug("closing %r failed", closable, exc_info=True)
            retired.clear()
            if self.recorder is not None:
                self.recorder.close()
            if self._delivery_store is not self.store:
                self._delivery_store.close()

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
            for session_id in self.book.watched:
                tg.start_soon(one, session_id)
        return reports

    async def deliver_due(self) -> int:
        """Send every notification due now, once; returns how many were attempted."""
        return await self.delivery.drain_once(self.settings.targets, self.notifiers)


def load_watched_states(store: Store, book: SessionBook, now: datetime) -> None:
    """Seat the stored states of the watched sessions only (not every session ever seen).

    A row that cannot be read is set aside with its reason, logged, and the
    session starts afresh: its next poll is a new baseline.
    """
    stored = store.load_states(list(book.watched))
    for session_id, state in stored.states.items():
        book.entry(session_id).state = state
    if stored.unreadable:
        store.set_aside_states(stored.unreadable, now)
    for row in stored.unreadable:
        log.warning(
            "session %s: stored state set aside (%s); its next poll is a new baseline",
            row.session_id,
            row.reason,
        )


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
