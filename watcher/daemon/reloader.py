"""The reloader: a new configuration, valid in full, is applied while the watcher runs.

`settings_change` works out what changed (a pure function of the old and new
settings); `Reloader.apply` tells each part: the API client is replaced when
the `factory:` section changed, targets whose definition changed get a new
notifier, the request budget its new rate, the watch list and timetable their
new sessions and cadence, discovery its new filter at once, and scheduled
reports their new schedules. `http`,
`log_format`, `state.path` and `state.record` take effect on the next restart,
and a reload that changes them says so.

A replaced client or notifier is retired: closed as soon as nothing uses it
(the old client's in-flight calls have returned, the old notifier's lane has
finished its send), not at exit. Until then the secrets of the config it was
built from stay masked (`Live.retired_secrets`); after, only the current
config's are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial

import anyio
from anyio.abc import TaskGroup

from watcher.core.settings import Settings, Target
from watcher.core.text import describe_error
from watcher.daemon.discovery import DiscoveryLoop
from watcher.daemon.live import Part, Wiring
from watcher.daemon.reports import ReportPart
from watcher.daemon.scheduler import PollScheduler
from watcher.daemon.supervisor import Supervisor
from watcher.delivery import DeliveryWorker
from watcher.notifiers import build_notifier
from watcher.notifiers.base import Notifier
from watcher.ops.failpoint import Failpoint, failpoint
from watcher.poll.api import FactoryClient, SessionSource

log = logging.getLogger("watcher.daemon")
# Settings a reload cannot apply: the attribute of `Settings`, and the config key it names.
RESTART_ONLY = {
    "http": "http",
    "log_format": "log_format",
    "state_path": "state.path",
    "record_path": "state.record",
    "state_url": "state.url",
    "ha": "state.lease_ttl/renew_every",
}


def client_for(settings: Settings) -> FactoryClient:
    """The Factory API client `settings` ask for."""
    factory = settings.factory
    return FactoryClient(
        factory.base_url,
        factory.api_key,
        timeout=factory.timeout.total_seconds(),
        concurrency=factory.concurrency,
    )


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """What a reload from one settings value to another must do."""

    client: bool = False  # the `factory:` section changed: a new API client
    notifiers: tuple[str, ...] = ()  # targets that need a new notifier
    retired: tuple[str, ...] = ()  # targets gone: their notifiers close
    rate: float | None = None  # the request budget's new rate, if it changed
    poll: bool = False  # `poll:` changed: every session's cadence is worked out again
    discovery: bool = False  # discovery is on with a changed filter: a pass now
    restart_only: tuple[str, ...] = ()  # changed, but only a restart applies them


def settings_change(old: Settings, new: Settings, notifiers: Collection[str]) -> SettingsChange:
    """What changed from `old` to `new`, given the targets that have a notifier now."""
    return SettingsChange(
        client=new.factory != old.factory,
        notifiers=tuple(
            name
            for name, target in new.targets.items()
            if old.targets.get(name) != target or name not in notifiers
        ),
        retired=tuple(sorted(set(notifiers) - set(new.targets))),
        rate=(
            new.factory.max_requests_per_second
            if new.factory.max_requests_per_second != old.factory.max_requests_per_second
            else None
        ),
        poll=new.poll != old.poll,
        discovery=new.discover is not None and new.discover != old.discover,
        restart_only=tuple(
            key for name, key in RESTART_ONLY.items() if getattr(new, name) != getattr(old, name)
        ),
    )


@dataclass(frozen=True, slots=True)
class Built:
    """What a reload built before switching: a new client (None: the old one stays) and
    the notifiers of the targets that changed, by name."""

    source: FactoryClient | None
    notifiers: dict[str, Notifier]


class Reloader(Part):
    """Re-reads the configuration on request and tells each part what changed."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        read: Callable[[], Settings] | None,
        scheduler: PollScheduler,
        discovery: DiscoveryLoop,
        delivery: DeliveryWorker,
        notifiers: dict[str, Notifier],
        supervisor: Supervisor,
        make_notifier: Callable[[Target], Notifier] = build_notifier,
        reports: ReportPart | None = None,
    ) -> None:
        super().__init__(wiring)
        self.reports = reports
        self._read = read
        self._make_notifier = make_notifier
        self.scheduler = scheduler
        self.discovery = discovery
        self.delivery = delivery
        self.notifiers = notifiers
        self.supervisor = supervisor
        self.systemd = supervisor.systemd
        # Replaced, not closed yet: each is closed once nothing uses it (or at exit).
        self.retired: list[Notifier | SessionSource] = []
        self._secrets_of: dict[int, tuple[str, ...]] = {}  # by id() of a retired one
        self._work: TaskGroup | None = None

    def attach(self, work: TaskGroup | None) -> None:
        """Close retired clients and notifiers in `work` from now on (None: the run ended;
        what is still retired then is closed with the rest at exit)."""
        self._work = work

    async def reload(self) -> bool:
        """Re-read the config; apply it only if it is valid in full. True when applied."""
        if self._read is None:
            log.warning("reload requested, but this watcher has no config file to re-read")
            return False
        self.systemd.reloading()
        try:
            new = await anyio.to_thread.run_sync(self._read)
        except Exception as error:  # ConfigError lists every problem; keep running the old config
            return await self._failed(str(error) or type(error).__name__)
        failpoint(Failpoint.DURING_RELOAD)
        for key in settings_change(self.live.settings, new, self.notifiers).restart_only:
            log.warning("%s changed: that takes effect on the next restart", key)
        try:
            self.apply(new)
        except Exception as error:  # a client or notifier could not be built: nothing switched
            return await self._failed(self.live.redact(describe_error(error)))
        self.metrics.config_loaded(success=True)
        self.supervisor.note = ""
        self.systemd.ready()
        log.info(
            "reloaded: %d session(s), %d rule(s), %d target(s)",
            len(new.sessions),
            len(new.rules),
            len(new.targets),
        )
        return True

    async def _failed(self, reason: str) -> bool:
        """A reload that did not happen: say why, keep the running config; False."""
        log.error("reload failed, keeping the running config:\n%s", reason)
        lines = reason.splitlines()
        self.supervisor.note = f"reload failed: {lines[0] if lines else reason}"
        self.metrics.config_loaded(success=False)
        self.systemd.status(await self.supervisor.status_line())
        self.systemd.ready()
        return False

    def apply(self, new: Settings) -> None:
        """Switch to `new`: start and stop session jobs, swap rules, targets and client."""
        live = self.live
        old = live.settings
        change = settings_change(old, new, self.notifiers)
        # Everything new is built before anything switches: a target or client that
        # cannot be built (a CA file gone bad since `check`) leaves the old config whole.
        built = self._build(new, change)
        live.settings = new
        if built.source is not None:
            old_source = live.source
            live.source = built.source
            self._retire(old_source, old, partial(live.idle, old_source))
        self._swap_notifiers(new, old, change, built.notifiers)
        if change.rate is not None:
            self.budget.set_rate(change.rate)
        self._rewatch(new, poll_changed=change.poll)
        if change.discovery:
            self.discovery.hurry()  # the new filter applies now, not a whole interval later
        self.discovery.start()
        if self.reports is not None:
            self.reports.reschedule()

    def _build(self, new: Settings, change: SettingsChange) -> Built:
        """The client and notifiers `new` needs anew; raises (closing what it built) if one
        cannot be built."""
        built = Built(None, {})
        try:
            for name in change.notifiers:
                built.notifiers[name] = self._make_notifier(new.targets[name])
            if change.client:
                built = Built(client_for(new), built.notifiers)
        except Exception:
            for notifier in built.notifiers.values():
                self._close_soon(notifier)
            raise
        return built

    def _close_soon(self, closable: Notifier | SessionSource) -> None:
        """Close something built for a reload that did not happen (in the run, if any)."""
        if self._work is not None:
            self._work.start_soon(closable.aclose)

    def _swap_notifiers(
        self,
        new: Settings,
        old: Settings,
        change: SettingsChange,
        built: Mapping[str, Notifier],
    ) -> None:
        replaced: list[Notifier] = []
        for name in change.notifiers:
            if name in self.notifiers:
                replaced.append(self.notifiers[name])
            self.notifiers[name] = built[name]
        replaced += [self.notifiers.pop(name) for name in change.retired]
        self.delivery.set_targets(new.targets, self.notifiers)
        for notifier in replaced:  # after set_targets: their lanes are finishing their sends
            self._retire(notifier, old, partial(self.delivery.released, notifier))

    def _retire(
        self,
        closable: Notifier | SessionSource,
        built_from: Settings,
        unused: Callable[[], Awaitable[None]],
    ) -> None:
        """Close `closable` once `unused()` returns; its config's secrets stay masked till then."""
        self.retired.append(closable)
        self._secrets_of[id(closable)] = built_from.secret_values()
        self._mask()
        if self._work is not None:
            self._work.start_soon(self._close_when_unused, closable, unused)

    async def _close_when_unused(
        self, closable: Notifier | SessionSource, unused: Callable[[], Awaitable[None]]
    ) -> None:
        await unused()
        try:
            await closable.aclose()
        except Exception:  # closing must not end the run
            log.debug("closing %r failed", closable, exc_info=True)
        self.retired[:] = [c for c in self.retired if c is not closable]
        self._secrets_of.pop(id(closable), None)
        self._mask()

    def _mask(self) -> None:
        """Mask the secrets of every config a still-open retired one was built from."""
        secrets = dict.fromkeys(s for found in self._secrets_of.values() for s in found)
        self.live.retired_secrets = tuple(secrets)

    def _rewatch(self, new: Settings, *, poll_changed: bool) -> None:
        """The watch list `new` asks for; sessions no longer watched are forgotten (by
        the book, everywhere: client, timetable, backoff)."""
        book = self.book
        before: Mapping[str, object] = book.watch(new)
        changed = [w for w in book.watched.values() if before.get(w.id) != w or poll_changed]
        if self.scheduler.running:  # running: otherwise run() schedules every session
            for w in changed:
                if w.id not in self.scheduler.timetable:
                    self.scheduler.schedule(w, first=w.id not in self.scheduler.in_flight)
                else:
                    self.scheduler.reschedule(w.id, force=True)
