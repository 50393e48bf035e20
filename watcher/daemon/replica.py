"""Replicas on PostgreSQL: one leads (polls and sends), the others stand by.

A `Replica` is the process's run when the state is PostgreSQL. It stands by
trying to take the lease (every `renew_every/2` with jitter, and at once when
a NOTIFY says the lease changed). Once it holds an epoch it leads for one
term: it sets the store's epoch (every write is fenced by it), returns the
rows an earlier leader had claimed but not finished to pending, and builds a
fresh leader `Watcher` that loads everything from the database, runs polls
and delivery inside the term's cancel scope, and shares the process's
metrics and HTTP endpoint. The term ends the moment trust ends (the window
ran out without a renewal, a renewal found the lease taken, a write was
fenced): its work is cancelled, the reason counted, and the replica stands
by again. SIGTERM drains the leader's work within the drain deadline, then
resigns (expires the lease, NOTIFY) so a standby leads at once.

No send starts unless the trust window still holds the send timeout (the
delivery gate). With SQLite none of this runs: `run` keeps its one `Watcher`.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Callable
from enum import StrEnum
from functools import partial

import anyio
from anyio.abc import TaskStatus

from watcher.core.lease import LeaseTimes, Renewal, StepDown, Trust, send_timeout, standby_wait
from watcher.core.settings import Settings
from watcher.daemon import Watcher
from watcher.daemon.live import P, R
from watcher.daemon.supervisor import HEARTBEAT_PERIOD
from watcher.notifiers import SEND_TIMEOUT, build_notifier
from watcher.ops.endpoint import Endpoint, Request, Response, bound_port, text
from watcher.ops.metrics import Metrics
from watcher.ops.systemd import SystemdNotifier
from watcher.store.errors import FencedError, StoreError
from watcher.store.postgres.lease import Acquisition, Lease, LeaseRow
from watcher.store.protocol import LeaderStore

log = logging.getLogger("watcher.daemon.replica")


class Role(StrEnum):
    """What a replica does now."""

    STANDBY = "standby"
    LEADER = "leader"


def holder_id() -> str:
    """This process's name in the lease: host, pid and a random id."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class RoleNotifier(SystemdNotifier):
    """systemd notifications of a replica: `STATUS=` starts with the role, holder and
    epoch, and `READY=1` goes once per process (not once per term as leader).
    """

    describe: Callable[[], str] = staticmethod(lambda: "")
    _ready_sent = False

    def status(self, text: str) -> bool:
        """`STATUS=` with the replica's role in front."""
        return super().status(f"{self.describe()}; {text}" if text else self.describe())

    @classmethod
    def for_process(cls) -> RoleNotifier:
        """The notifier `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` ask for (see `from_env`)."""
        notifier = cls.from_env()
        assert isinstance(notifier, RoleNotifier)
        return notifier

    def ready(self) -> bool:
        """`READY=1`, the first time only."""
        if self._ready_sent:
            return False
        self._ready_sent = True
        return super().ready()


class LeaderWatcher(Watcher):
    """A leader's `Watcher`: a store call the database fences reports it at once."""

    def __init__(self, *args: object, on_fenced: Callable[[FencedError], None], **kw: object):
        self._on_fenced = on_fenced
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    async def db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a store call in the database thread; a fenced write ends the term."""
        try:
            return await super().db(fn, *args, **kwargs)
        except FencedError as error:
            self._on_fenced(error)
            raise

    async def _delivery_db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await super()._delivery_db(fn, *args, **kwargs)
        except FencedError as error:
            self._on_fenced(error)
            raise


class Replica:
    """One replica of a watcher whose state is PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        lease: Lease,
        open_store: Callable[[], LeaderStore],
        reload: Callable[[], Settings] | None = None,
        systemd: RoleNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        build: Callable[..., Watcher] = LeaderWatcher,
    ) -> None:
        self.settings = settings
        self.lease = lease
        self.holder = lease.holder
        self._open_store = open_store
        self._read = reload
        self.clock = clock
        self._rng = rng or random.Random()
        self._build = build
        ha = settings.ha
        self.times = LeaseTimes.of(ha.lease_ttl, ha.renew_every, ha.margin)
        self.send_timeout = send_timeout(SEND_TIMEOUT, self.times.ttl)
        self.systemd = systemd or RoleNotifier.for_process()
        self.systemd.describe = self.describe
        self.metrics = Metrics()
        self.metrics.leader.set_function(lambda: 1.0 if self.leading() else 0.0)
        self.role = Role.STANDBY
        self.trust: Trust | None = None
        self.watcher: Watcher | None = None
        self.seen: LeaseRow | None = None  # the lease as a standby last saw it
        self.problem: str | None = None  # why the lease cannot be asked now
        self.endpoint_port: int | None = None
        self._stopping = False
        self._reason: StepDown | None = None  # why the current term ends
        self._term: anyio.CancelScope | None = None
        self._waiting: anyio.CancelScope | None = None
        self._renewed = anyio.Event()

    # --- what operators see --------------------------------------------------------

    def leading(self) -> bool:
        """Whether this replica leads now: it holds an epoch it still trusts."""
        trust = self.trust
        return trust is not None and trust.trusted(self.clock())

    def describe(self) -> str:
        """Role, holder and epoch, for `STATUS=`, the logs and the health answers."""
        trust = self.trust
        if self.role is Role.LEADER and trust is not None:
            return f"leader (epoch {trust.epoch}, holder {self.holder})"
        if self.problem is not None:
            return f"standby (holder {self.holder}; lease unknown: {self.problem})"
        seen = self.seen
        if seen is None or seen.expires_in <= 0:
            return f"standby (holder {self.holder}; no leader)"
        return f"standby (holder {self.holder}; leader {seen.holder}, epoch {seen.epoch})"

    def routes(self) -> dict[str, Callable[[Request], Response]]:
        """`/metrics`, `/healthz` and `/readyz` of the replica, whatever its role."""

        def metrics(request: Request) -> Response:
            body, content_type = self.metrics.exposition(request.accept)
            return Response(200, body, content_type)

        def healthz(request: Request) -> Response:
            return text(200, f"ok: {self.describe()}")

        def readyz(request: Request) -> Response:
            watcher = self.watcher
            if self.role is Role.LEADER:
                if watcher is None:
                    return text(503, f"{self.describe()}: starting")
                answer = watcher.readiness()
                return text(200 if answer.ready else 503, f"{self.describe()}: {answer.reason}")
            # A standby is ready while it can ask the database for the lease.
            return text(503 if self.problem else 200, self.describe())

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}

    # --- lifecycle -----------------------------------------------------------------

    def stopping(self) -> bool:
        """Whether a stop was asked for (a method: a check after an await is not narrowed)."""
        return self._stopping

    def request_stop(self) -> None:
        """Stop: a leader drains (a second call: at once) and resigns; a standby exits."""
        self._stopping = True
        if self.watcher is not None:
            self.watcher.request_stop()
        if self._waiting is not None:
            self._waiting.cancel()

    async def run(
        self, *, on_ready: Callable[[], None] | None = None, handle_signals: bool = True
    ) -> None:
        """Stand by and lead in turn until stopped; then resign and return."""
        # Opened once first: the schema (the lease table with it) is migrated, and a
        # database this release cannot use stops the start, before anything else.
        store = await anyio.to_thread.run_sync(self._open_store)
        await anyio.to_thread.run_sync(_close_quietly, store)
        endpoint = Endpoint(self.routes())
        listener = None
        http = self.settings.http
        if http is not None:
            listener = await endpoint.listen(http.host, http.port)
            self.endpoint_port = bound_port(listener)
            log.info("metrics and health on http://%s/metrics", http.address(self.endpoint_port))
        log.info("replica %s: state in PostgreSQL; standing by for the lease", self.holder)
        try:
            async with anyio.create_task_group() as outer:
                if handle_signals:
                    await outer.start(self._signals)
                if listener is not None:
                    outer.start_soon(endpoint.serve, listener)
                outer.start_soon(self._supervise)
                await self._cycle(on_ready)
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.lease.aclose()
        log.info("replica %s stopped", self.holder)

    async def _cycle(self, on_ready: Callable[[], None] | None) -> None:
        """Try for the lease, lead while it holds, stand by otherwise, until stopped."""
        ready = False
        while not self._stopping:
            started = self.clock()
            got = await self._acquire()
            if got.epoch is not None and not self._stopping:
                self.problem = None
                await self._lead(got.epoch, started, None if ready else on_ready)
                ready = True
                # A replica that just stepped down lets the others try first: it was
                # the one that failed, and its own resign woke them.
                with anyio.CancelScope() as self._waiting:
                    if not self.stopping():
                        await anyio.sleep(standby_wait(self.times, self._rng.random()))
                self._waiting = None
                continue
            self._standing_by(got)
            if not ready:
                ready = True
                self.systemd.ready()
                if on_ready is not None:
                    on_ready()
            wait = standby_wait(self.times, self._rng.random())
            with anyio.CancelScope() as self._waiting:
                if self.stopping():
                    break
                if got.failure is not None:
                    await anyio.sleep(wait)
                else:
                    await self.lease.wait(wait)
            self._waiting = None

    async def _acquire(self) -> Acquisition:
        """One try for the lease; an answer that cannot be read is a failed try, not an exit."""
        try:
            return await self.lease.acquire()
        except Exception as error:  # a lease row this release cannot decode, or a bug
            # `_standing_by` logs the failure once; the traceback is for debugging.
            log.debug("the lease answer could not be read", exc_info=True)
            return Acquisition(None, failure=f"unreadable lease answer: {_one_line(error)}")

    async def _resign(self, epoch: int) -> bool:
        """Resign `epoch`; an answer that cannot be read leaves the lease to expire."""
        try:
            return await self.lease.resign(epoch)
        except Exception as error:  # as in `_acquire`: the replica stands by regardless
            log.error("could not resign the lease: %s", _one_line(error))  # noqa: TRY400
            return False

    def _standing_by(self, got: Acquisition) -> None:
        """Note what a failed try saw: the leader, or why the database cannot be asked."""
        if got.failure is not None:
            if got.failure != self.problem:
                log.warning("standby %s: cannot ask for the lease: %s", self.holder, got.failure)
            self.problem = got.failure
            return
        if self.problem is not None:
            log.info("standby %s: the database answers again", self.holder)
        self.problem = None
        seen, before = got.held_by, self.seen
        self.seen = seen
        if seen is not None and (before is None or before.epoch != seen.epoch):
            log.info("standby %s: leader is %s (epoch %d)", self.holder, seen.holder, seen.epoch)

    async def _lead(self, epoch: int, started: float, on_ready: Callable[[], None] | None) -> None:
        """One term as leader of `epoch` (acquired at monotonic `started`)."""
        self.trust = Trust(epoch, started, self.times)
        self.role = Role.LEADER
        self._reason = None
        self.metrics.lease_epoch.set(epoch)
        self.metrics.leadership_changes.labels("acquired").inc()
        log.info("leader: holder %s, epoch %d", self.holder, epoch)
        store: LeaderStore | None = None
        try:
            async with anyio.create_task_group() as term:
                self._term = term.cancel_scope
                term.start_soon(self._keep, epoch)
                store = await anyio.to_thread.run_sync(self._open_store)
                watcher = await self._start_term(store, epoch)
                self.watcher = watcher
                if self._stopping:
                    watcher.request_stop()
                await watcher.run(handle_signals=False, serve_http=False, on_ready=on_ready)
                term.cancel_scope.cancel()  # stopped and drained: the renewals end too
        except Exception as error:  # the term's work failed (the store); the process goes on
            if self._reason is None:
                self._reason = StepDown.FENCED if _fenced(error) else StepDown.CONNECTION
                # A store failure is told by its message; anything else is a bug: traceback.
                log.error(  # noqa: TRY400 - a traceback only for a bug (exc_info below)
                    "leader epoch %d could not go on: %s",
                    epoch,
                    _one_line(error),
                    exc_info=not _caught(error, StoreError),
                )
        finally:
            if self.watcher is not None:
                self.settings = self.watcher.settings  # a reload while leading carries on
            self.watcher = None
            self._term = None
            self.trust = None
            self.role = Role.STANDBY
            if store is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_close_quietly, store)
        reason = self._reason or StepDown.RESIGNED
        with anyio.CancelScope(shield=True):
            resigned = await self._resign(epoch)
        if self._stopping and self._reason is None:
            reason = StepDown.RESIGNED
        self.metrics.leadership_changes.labels(str(reason)).inc()
        log.warning(
            "stepped down (%s): holder %s, epoch %d%s",
            reason,
            self.holder,
            epoch,
            "; lease resigned" if resigned else "",
        )

    async def _start_term(self, store: LeaderStore, epoch: int) -> Watcher:
        """Fence the store with `epoch`, return earlier claims to pending, and build the
        term's leader from what the database holds now."""
        store.set_epoch(epoch)
        requeued = await anyio.to_thread.run_sync(store.requeue_claimed, epoch)
        self.metrics.rows_requeued.inc(requeued)
        if requeued:
            log.warning(
                "epoch %d: %d row(s) claimed by an earlier leader returned to pending "
                "(they may be sent twice)",
                epoch,
                requeued,
            )
        # Built on the event loop (its parts make anyio primitives); it reads the
        # watched sessions' states from the database, as a start does.
        return self._build(
            self.settings,
            store=store,
            metrics=self.metrics,
            systemd=self.systemd,
            reload=self._read,
            make_notifier=partial(build_notifier, timeout=self.send_timeout),
            gate=self._gate,
            on_fenced=self._fenced,
        )

    async def _keep(self, epoch: int) -> None:
        """Renew the lease on its grid while trusted; end the term when trust ends."""
        lease = self.lease
        while True:
            trust = self.trust
            if trust is None:
                return
            step = trust.next(self.clock())
            if step.reason is not None:
                self._step_down(step.reason)
                return
            await anyio.sleep(max(0.0, min(step.at, trust.until) - self.clock()))
            started = self.clock()
            if not trust.trusted(started):
                continue  # next() steps down
            outcome = Renewal.FAILED
            failure: str | None = "the trust window ended during the renewal"
            with anyio.move_on_after(trust.left(started)):
                result = await lease.renew(epoch)
                outcome, failure = result.outcome, result.failure
            if outcome in (Renewal.FAILED, Renewal.BROKEN):
                self.metrics.lease_renew_failures.inc()
                log.warning("leader epoch %d: lease renewal failed: %s", epoch, failure)
            if self.trust is None:
                return
            renewed, step = trust.after(outcome, started, self.clock())
            self.trust = renewed
            if outcome is Renewal.RENEWED:
                if trust.failures:
                    log.info("leader epoch %d: lease renewed again", epoch)
                self._renewed.set()
                self._renewed = anyio.Event()
            if step.reason is not None:
                self._step_down(step.reason)
                return

    def _step_down(self, reason: StepDown) -> None:
        """End the term now: no poll or send of it goes on."""
        if self._reason is None:
            self._reason = reason
        self.trust = None
        if self._term is not None:
            self._term.cancel()

    def _fenced(self, error: FencedError) -> None:
        """A write of this term was refused by the database: count it, step down."""
        self.metrics.fenced_writes.inc()
        log.warning("%s", error)
        self._step_down(StepDown.FENCED)

    async def _gate(self) -> None:
        """Hold a send until the trust window holds the whole send timeout (the next
        renewal extends it); a term that ends cancels the wait."""
        while True:
            trust = self.trust
            if trust is not None and trust.may_send(self.clock(), self.send_timeout):
                return
            await self._renewed.wait()

    async def _supervise(self) -> None:
        """While standing by: keep `STATUS=` current and ping the watchdog (a leader's
        watcher does both for its term)."""
        interval = self.systemd.watchdog_interval()
        period = min(HEARTBEAT_PERIOD, interval) if interval else HEARTBEAT_PERIOD
        while True:
            if self.role is Role.STANDBY:
                self.systemd.status("")
                if interval:
                    self.systemd.watchdog()
            await anyio.sleep(period)

    async def _signals(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log.info("received %s", signal.Signals(signum).name)
                    self.request_stop()
                elif self.watcher is not None:
                    await self.watcher.reload()
                else:
                    self._reload_standby()

    def _reload_standby(self) -> None:
        """A standby re-reads the config; its next term leads with it."""
        if self._read is None:
            return
        try:
            self.settings = self._read()
        except Exception as error:  # a bad config keeps the one in force
            log.error("reload failed; keeping the running config: %s", _one_line(error))  # noqa: TRY400
            return
        log.info("configuration reloaded; it applies from the next term as leader")


def _caught(error: BaseException, kind: type[BaseException]) -> bool:
    """Whether `error` is a `kind` (or an exception group of nothing else)."""
    if isinstance(error, BaseExceptionGroup):
        return all(_caught(e, kind) for e in error.exceptions)
    return isinstance(error, kind)


def _fenced(error: BaseException) -> bool:
    """Whether `error` (or one inside an exception group) is a fenced write."""
    if isinstance(error, FencedError):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_fenced(e) for e in error.exceptions)
    return False


def _one_line(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup) and error.exceptions:
        return _one_line(error.exceptions[0])
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def _close_quietly(store: LeaderStore) -> None:
    try:
        store.close()
    except Exception:  # closing a broken store must not hide the step-down
        log.debug("closing the term's store failed", exc_info=True)
