"""`factory-watcher status`: what the watcher watches and what is stuck, from the state database.

It reads through the store's read-only view (`watcher.store.ReadOnlyStore`):
opened read-only with a short busy timeout, everything read in one short
read transaction. In WAL mode a reader never blocks the daemon's writes, and
the daemon never waits for this command. The daemon writes what only it
knows (the watched set, last and next poll of each session, API state, a
heartbeat) in one batch every few seconds, so what `status` shows is at most
that old. Scheduled reports show their last run (stored with the run itself)
and their next run (from the config's cron expression). This module builds
the report from those rows and renders it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.config.cron import fire_times
from watcher.core.settings import ReportSpec, WatchedSession
from watcher.store import (
    LeaseRow,
    ReadOnlyStore,
    StatusRows,
    StoreError,
    open_read_only,
    watched_in,
)

DAEMON_SILENT_AFTER = 15.0  # three missed housekeeping rounds: no daemon running
STATUS_FORMAT = 1


class StatusError(Exception):
    """The state database cannot be read."""


@dataclass(frozen=True, slots=True)
class SessionStatus:
    """One watched session as `status` shows it."""

    id: str
    name: str | None
    status: str | None
    gone: bool
    since: datetime | None
    last_poll: datetime | None
    last_poll_outcome: str | None
    next_poll: datetime | None
    last_notification: datetime | None


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """The outbox of one target."""

    target: str
    pending: int
    retrying: int
    next_attempt: datetime | None
    dead: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification given up on, with its last error."""

    id: int
    target: str
    rule: str
    event: str
    session: str | None
    attempts: int
    created_at: datetime
    failed_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    """Who leads the replicas sharing a PostgreSQL state, by the database's clock."""

    holder: str
    epoch: int
    expires_in: float  # seconds; negative: lapsed that long ago
    acquired_at: datetime
    renewed_at: datetime

    @property
    def held(self) -> bool:
        """Whether the lease is still in force (someone leads)."""
        return self.expires_in > 0


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """A scheduled report: its last run (stored) and next run (from the config).

    A report the store has run but the config no longer has shows `schedule` None.
    """

    name: str
    schedule: str | None
    timezone: str | None
    last_run: datetime | None
    next_run: datetime | None


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything `status` prints."""

    database: str
    generated_at: datetime
    heartbeat_at: datetime | None
    api_state: str | None
    api_since: datetime | None
    api_reason: str | None
    sessions: tuple[SessionStatus, ...] = ()
    targets: tuple[TargetStatus, ...] = ()
    dead_letters: tuple[DeadLetter, ...] = field(default=())
    database_bytes: int | None = None
    rows_pruned: Mapping[str, int] = field(default_factory=dict)  # by table, over its life
    lease: LeaseStatus | None = None  # PostgreSQL: the leader lease (None: none, or SQLite)
    reports: tuple[ReportStatus, ...] = ()

    @property
    def daemon_running(self) -> bool:
        """Whether a daemon wrote its heartbeat recently."""
        if self.heartbeat_at is None:
            return False
        return (self.generated_at - self.heartbeat_at).total_seconds() <= DAEMON_SILENT_AFTER


def _dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    return datetime.fromtimestamp(float(value), tz=UTC)


def read_status(
    path: Path,
    configured: Sequence[WatchedSession] = (),
    *,
    now: datetime | None = None,
    opener: Callable[[Path], ReadOnlyStore] = open_read_only,
    reports: Sequence[ReportSpec] = (),
) -> StatusReport:
    """Read the status report from the database at `path`.

    The watched set is the daemon's own (written on start and reload); before
    a daemon has written one, the configured sessions stand in for it.
    `opener` opens the store read-only (SQLite unless told otherwise);
    `reports` are the configured reports, whose next runs are worked out here.
    """
    try:
        store = opener(path)
        try:
            rows = store.read_status([w.id for w in configured])
        finally:
            store.close()
    except StoreError as error:
        raise StatusError(str(error)) from None
    now = now or datetime.now(UTC)
    return build_report(rows, str(path), configured, now, next_runs(reports, now))


def next_runs(
    reports: Sequence[ReportSpec], now: datetime
) -> tuple[tuple[ReportSpec, datetime | None], ...]:
    """Each configured report with its next scheduled time after `now` (None: never)."""
    return tuple((spec, next(iter(fire_times(spec, now, 1)), None)) for spec in reports)


def build_report(
    rows: StatusRows,
    database: str,
    configured: Sequence[WatchedSession],
    now: datetime,
    reports: Sequence[tuple[ReportSpec, datetime | None]] = (),
) -> StatusReport:
    """The report from what the store read and the reports' next runs (pure)."""
    meta = rows.meta
    watched = watched_in(meta)  # the daemon's watched set; before it wrote one, the config's
    if watched is None:
        watched = [(w.id, w.name) for w in configured]
    sessions = []
    for sid, name in watched:
        status, gone = rows.states.get(sid, (None, False))
        poll = rows.polls.get(sid)
        sessions.append(
            SessionStatus(
                id=sid,
                name=name,
                status=status,
                gone=gone,
                since=rows.since.get(sid),
                last_poll=None if poll is None else poll.polled_at,
                last_poll_outcome=None if poll is None else poll.outcome,
                next_poll=None if poll is None else poll.next_poll_at,
                last_notification=rows.notified.get(sid),
            )
        )
    return StatusReport(
        database=database,
        generated_at=now,
        heartbeat_at=_dt(meta.get("heartbeat_at")),
        api_state=meta.get("api_state"),
        api_since=_dt(meta.get("api_since")),
        api_reason=meta.get("api_reason") or None,
        sessions=tuple(sessions),
        targets=tuple(
            TargetStatus(t.target, t.pending, t.retrying, t.next_attempt, t.dead, t.last_error)
            for t in rows.targets
        ),
        dead_letters=tuple(
            DeadLetter(
                id=d.id,
                target=d.target,
                rule=d.rule,
                event=d.event_type,
                session=d.session_id,
                attempts=d.attempts,
                created_at=d.created_at,
                failed_at=d.failed_at,
                last_error=d.last_error,
            )
            for d in rows.dead_letters
        ),
        database_bytes=rows.database_bytes,
        rows_pruned=dict(rows.rows_pruned),
        lease=None if rows.lease is None else lease_status(rows.lease),
        reports=_reports(rows.report_runs, reports),
    )


def lease_status(row: LeaseRow) -> LeaseStatus:
    """The lease as `status` shows it (pure)."""
    return LeaseStatus(
        holder=row.holder,
        epoch=row.epoch,
        expires_in=row.expires_in,
        acquired_at=row.acquired_at,
        renewed_at=row.renewed_at,
    )


def _reports(
    runs: Mapping[str, datetime], configured: Sequence[tuple[ReportSpec, datetime | None]]
) -> tuple[ReportStatus, ...]:
    """The configured reports in config order, then those only the store knows, by name."""
    known = {spec.name for spec, _ in configured}
    return tuple(
        ReportStatus(spec.name, spec.schedule, spec.timezone, runs.get(spec.name), next_run)
        for spec, next_run in configured
    ) + tuple(
        ReportStatus(name, None, None, at, None)
        for name, at in sorted(runs.items())
        if name not in known
    )


# --- output -----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def to_json(report: StatusReport) -> dict[str, Any]:
    """The report as one JSON document with stable keys (`format` 1)."""
    return {
        "format": STATUS_FORMAT,
        "database": report.database,
        "generated_at": _iso(report.generated_at),
        "daemon": {"running": report.daemon_running, "heartbeat_at": _iso(report.heartbeat_at)},
        "api": {
            "state": report.api_state,
            "since": _iso(report.api_since),
            "reason": report.api_reason,
        },
        "sessions": [
            {
                "id": s.id,
                "name": s.name,
                "status": "gone" if s.gone else s.status,
                "gone": s.gone,
                "since": _iso(s.since),
                "last_poll": _iso(s.last_poll),
                "last_poll_outcome": s.last_poll_outcome,
                "next_poll": _iso(s.next_poll),
                "last_notification": _iso(s.last_notification),
            }
            for s in report.sessions
        ],
        "outbox": [
            {
                "target": t.target,
                "pending": t.pending,
                "retrying": t.retrying,
                "next_attempt": _iso(t.next_attempt),
                "dead": t.dead,
                "last_error": t.last_error,
            }
            for t in report.targets
        ],
        "dead_letters": [
            {
                "id": d.id,
                "target": d.target,
                "rule": d.rule,
                "event": d.event,
                "session": d.session,
                "attempts": d.attempts,
                "created_at": _iso(d.created_at),
                "failed_at": _iso(d.failed_at),
                "last_error": d.last_error,
            }
            for d in report.dead_letters
        ],
        "storage": {
            "database_bytes": report.database_bytes,
            "rows_pruned": dict(sorted(report.rows_pruned.items())),
        },
        "lease": None if report.lease is None else _lease_json(report.lease),
        "reports": [
            {
                "name": r.name,
                "schedule": r.schedule,
                "timezone": r.timezone,
                "configured": r.schedule is not None,
                "last_run": _iso(r.last_run),
                "next_run": _iso(r.next_run),
            }
            for r in report.reports
        ],
    }


def _lease_json(lease: LeaseStatus) -> dict[str, Any]:
    return {
        "holder": lease.holder,
        "epoch": lease.epoch,
        "held": lease.held,
        "expires_in_s": round(lease.expires_in, 1),
        "acquired_at": _iso(lease.acquired_at),
        "renewed_at": _iso(lease.renewed_at),
    }


def lease_line(lease: LeaseStatus) -> str:
    """Who leads and until when, in one line (the database's clock)."""
    if lease.held:
        return (
            f"leader: {lease.holder} (epoch {lease.epoch}), "
            f"lease expires in {_span(lease.expires_in)}"
        )
    return (
        f"leader: none (the lease lapsed {_span(-lease.expires_in)} ago; "
        f"last held by {lease.holder}, epoch {lease.epoch})"
    )


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    return [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)).rstrip()
        for line in (header, *rows)
    ]


def render_text(report: StatusReport) -> str:
    """The report as tables for a terminal."""
    now = report.generated_at
    lines = [f"state database: {report.database}"]
    if report.daemon_running:
        lines.append(f"daemon: running (heartbeat {_ago(report.heartbeat_at, now)})")
    elif report.heartbeat_at is None:
        lines.append("daemon: never ran with this database")
    else:
        lines.append(f"daemon: not running (last heartbeat {_ago(report.heartbeat_at, now)})")
    api = report.api_state or "unknown"
    if report.api_since is not None and api != "up":
        api += f" since {_ago(report.api_since, now)}"
    if report.api_reason and report.api_state != "up":
        api += f": {report.api_reason}"
    lines.append(f"Factory API: {api}")
    if report.lease is not None:
        lines.append(lease_line(report.lease))
    lines += ["", f"sessions ({len(report.sessions)}):"]
    rows = [
        [
            s.name or s.id,
            "gone (404)" if s.gone else (s.status or "not polled yet"),
            _ago(s.since, now),
            _ago(s.last_poll, now) + (f" ({s.last_poll_outcome})" if s.last_poll_outcome else ""),
            _ago(s.next_poll, now),
            _ago(s.last_notification, now),
        ]
        for s in report.sessions
    ]
    header = ["SESSION", "STATUS", "SINCE", "LAST POLL", "NEXT POLL", "LAST NOTIFIED"]
    lines += ["  " + line for line in _table(header, rows)]
    lines += ["", "outbox:"]
    if not report.targets:
        lines.append("  nothing pending, no dead letters")
    else:
        rows = [
            [
                t.target,
                str(t.pending),
                str(t.retrying) + (f" (next {_ago(t.next_attempt, now)})" if t.retrying else ""),
                str(t.dead),
                t.last_error or "",
            ]
            for t in report.targets
        ]
        header = ["TARGET", "PENDING", "RETRYING", "DEAD", "LAST ERROR"]
        lines += ["  " + line for line in _table(header, rows)]
    if report.dead_letters:
        lines += ["", f"dead letters ({len(report.dead_letters)}; retry with `outbox retry`):"]
        rows = [
            [
                str(d.id),
                d.target,
                d.event,
                d.session or "-",
                _ago(d.failed_at, now),
                d.last_error or "",
            ]
            for d in report.dead_letters
        ]
        header = ["ID", "TARGET", "EVENT", "SESSION", "FAILED", "ERROR"]
        lines += ["  " + line for line in _table(header, rows)]
    if report.reports:
        lines += ["", f"reports ({len(report.reports)}):"]
        rows = [
            [
                r.name,
                "not in the config" if r.schedule is None else f"{r.schedule} ({r.timezone})",
                _when(r.last_run, now),
                "-" if r.schedule is None else _when(r.next_run, now, none="never"),
            ]
            for r in report.reports
        ]
        header = ["REPORT", "SCHEDULE", "LAST RUN", "NEXT RUN"]
        lines += ["  " + line for line in _table(header, rows)]
    lines += ["", storage_line(report)]
    return "\n".join(lines)


def _when(value: datetime | None, now: datetime, none: str = "never") -> str:
    """A scheduled time as a UTC time to the minute, and how far from now."""
    if value is None:
        return none
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({_ago(value, now)})"


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def storage_line(report: StatusReport) -> str:
    """The database's size and the rows retention has pruned, in one line."""
    size = "size unknown" if report.database_bytes is None else _size(report.database_bytes)
    pruned = report.rows_pruned
    if not any(pruned.values()):
        return f"state: {size}; nothing pruned yet"
    detail = ", ".join(f"{table} {n}" for table, n in sorted(pruned.items()) if n)
    return f"state: {size}; pruned {sum(pruned.values())} row(s) ({detail})"
