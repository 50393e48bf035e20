"""Prometheus figures of one watcher, on its own registry (prometheus-client).

Each `Watcher` owns a `Metrics` with a private `CollectorRegistry`, so several
watchers in one process (tests, the demo) never share or clash over series.
Counters and gauges the daemon moves as things happen are attributes here:
a new figure is one line in `__init__` and one call where it happens.
Figures that live in the store (outbox depth, sessions by status) are read
in one batch by the daemon's housekeeping every few seconds and rendered by
`_StoreCollector`, so a scrape never touches the database.

No label carries a session id, a title, an error text or a secret: label
values come from `watcher.core.figures` (fixed vocabularies), event types,
target names (chosen by the operator) and the version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from watcher import __version__

PREFIX = "factory_watcher"
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOUSEKEEPING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """Figures read from the store in one batch.

    `oldest_pending_at` is a Unix time; its age is taken when scraped.
    """

    sessions: Mapping[str, int] = field(default_factory=dict)
    pending: Mapping[str, int] = field(default_factory=dict)
    dead: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_at: float | None = None


class _StoreCollector(Collector):
    """Renders the latest `StoreFigures` at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.figures = StoreFigures()
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        figures = self.figures
        sessions = GaugeMetricFamily(
            f"{PREFIX}_sessions", "Watched sessions by last known status.", labels=["status"]
        )
        for status, count in sorted(figures.sessions.items()):
            sessions.add_metric([status], count)
        pending = GaugeMetricFamily(
            f"{PREFIX}_outbox_pending",
            "Notifications waiting to be sent (retries included), by target.",
            labels=["target"],
        )
        for target, count in sorted(figures.pending.items()):
            pending.add_metric([target], count)
        dead = GaugeMetricFamily(
            f"{PREFIX}_outbox_dead",
            "Dead letters kept in the outbox, by target.",
            labels=["target"],
        )
        for target, count in sorted(figures.dead.items()):
            dead.add_metric([target], count)
        oldest = figures.oldest_pending_at
        age = 0.0 if oldest is None else max(0.0, self._clock() - oldest)
        oldest_family = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_pending_seconds",
            "Age of the oldest pending notification (0 when none is pending).",
            value=age,
        )
        return [sessions, pending, dead, oldest_family]


class _ProcessCollector(ProcessCollector):
    """prometheus-client's process figures, also under systemd's `ProcSubset=pid`.

    The stock collector reads the boot time from `/proc/stat` and reports
    nothing at all without it; the hardened unit hides that file. The boot
    time is then `CLOCK_REALTIME - CLOCK_BOOTTIME`, which is what the kernel
    counts process start times from.
    """

    def _boot_time(self) -> float:
        try:
            found: float | None = super()._boot_time()  # type: ignore[no-untyped-call]
        except OSError:
            found = None
        if found:
            return found
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class Metrics:
    """Every figure of one watcher, on a registry of its own."""

    def __init__(
        self,
        *,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
        proc: str = "/proc",
    ) -> None:
        # `*_created` series double the output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        # Counters: moved where things happen.
        self.polls = Counter(
            f"{PREFIX}_polls",
            "Polls of the Factory API by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "Time one poll of the Factory API took, answer or failure.",
            buckets=POLL_BUCKETS,
            registry=registry,
        )
        self.housekeeping_duration = Histogram(
            f"{PREFIX}_housekeeping_seconds",
            "Time one housekeeping round took (poll bookkeeping written, store figures read).",
            buckets=HOUSEKEEPING_BUCKETS,
            registry=registry,
        )
        self.events = Counter(
            f"{PREFIX}_events",
            "Events found, each once however many targets it goes to.",
            ["type"],
            registry=registry,
        )
        self.notifications = Counter(
            f"{PREFIX}_notifications",
            "Notification attempts by target and outcome (sent, retried, dead).",
            ["target", "outcome"],
            registry=registry,
        )
        self.notification_failures = Counter(
            f"{PREFIX}_notification_failures",
            "Failed notification attempts by target and reason.",
            ["target", "reason"],
            registry=registry,
        )
        self.record_failures = Counter(
            f"{PREFIX}_record_failures",
            "Polls `run --record` could not record, by reason (an errno name such as"
            " ENOSPC, or dropped when the writer was behind).",
            ["reason"],
            registry=registry,
        )
        self.reports_sent = Counter(
            f"{PREFIX}_reports_sent",
            "Scheduled report runs queued for delivery, by report (one per scheduled time).",
            ["report"],
            registry=registry,
        )
        self.reports_skipped = Counter(
            f"{PREFIX}_reports_skipped",
            "Scheduled report runs not sent, by report and reason (too_old: past its"
            " misfire_grace; empty: nothing happened and skip_empty is set).",
            ["report", "reason"],
            registry=registry,
        )
        # Gauges: set as the state changes.
        self.card_calls = Counter(
            f"{PREFIX}_card_calls",
            "Slack calls that kept live cards current, by target and call"
            " (post, update, reply, replaced, found).",
            ["target", "call"],
            registry=registry,
        )
        self.rows_pruned = Counter(
            f"{PREFIX}_rows_pruned",
            "Rows deleted by retention (state: keep_delivered, keep_dead,"
            " forget_sessions_after), by table.",
            ["table"],
            registry=registry,
        )
        self.database_bytes = Gauge(
            f"{PREFIX}_database_bytes",
            "Size of the state database in bytes (its pages; freed pages are reused).",
            registry=registry,
        )
        self.api_up = Gauge(
            f"{PREFIX}_api_up",
            "1 while the Factory API answers polls, else 0.",
            registry=registry,
        )
        self.config_reload_success = Gauge(
            f"{PREFIX}_config_last_reload_success",
            "1 if the last configuration (re)load succeeded, else 0.",
            registry=registry,
        )
        self.config_reload_timestamp = Gauge(
            f"{PREFIX}_config_last_reload_timestamp_seconds",
            "Unix time of the last successful configuration (re)load.",
            registry=registry,
        )
        # Leadership (replicas on PostgreSQL); a watcher on SQLite always leads.
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica leads (trusts its lease) and polls and sends, else 0.",
            registry=registry,
        )
        self.lease_epoch = Gauge(
            f"{PREFIX}_lease_epoch",
            "The lease epoch this replica last led with (0: never led).",
            registry=registry,
        )
        self.lease_renew_failures = Counter(
            f"{PREFIX}_lease_renew_failures",
            "Lease renewals that could not reach the database.",
            registry=registry,
        )
        self.leadership_changes = Counter(
            f"{PREFIX}_leadership_changes",
            "Changes of this replica's role: acquired, or a step-down by reason"
            " (expired, fenced, lost, resigned, connection).",
            ["reason"],
            registry=registry,
        )
        self.fenced_writes = Counter(
            f"{PREFIX}_fenced_writes",
            "Writes the database refused because this replica's epoch no longer holds the lease.",
            registry=registry,
        )
        self.rows_requeued = Counter(
            f"{PREFIX}_rows_requeued",
            "Outbox rows a previous leader had claimed but not finished, returned to pending"
            " on takeover (the only possible duplicates).",
            registry=registry,
        )
        Info(f"{PREFIX}_build", "The running factory-watcher.", registry=registry).info(
            {"version": version}
        )
        self._store = _StoreCollector(clock)
        registry.register(self._store)
        _ProcessCollector(proc=proc, registry=registry)
        PlatformCollector(registry=registry)
        self._clock = clock
        self.api_up.set(1)
        self.config_loaded(success=True)

    def config_loaded(self, *, success: bool) -> None:
        """Record a configuration load or reload."""
        self.config_reload_success.set(1 if success else 0)
        if success:
            self.config_reload_timestamp.set(self._clock())

    def set_store_figures(self, figures: StoreFigures) -> None:
        """Replace the store-derived figures (housekeeping, every few seconds)."""
        self._store.figures = figures

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format `accept` asks for (Prometheus text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
