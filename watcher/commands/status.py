"""`factory-watcher status`: what the watcher watches and what is stuck, from the state database.

It opens the database read-only (`mode=ro`) with a short busy timeout and
reads everything in one short read transaction. In WAL mode a reader never
blocks the daemon's writes, and the daemon never waits for this command.
The daemon writes what only it knows (the watched set, last and next poll
of each session, API state, a heartbeat) in one batch every few seconds, so
what `status` shows is at most that old.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from watcher.core.settings import WatchedSession

BUSY_TIMEOUT = 0.2  # seconds; the daemon's write transactions are short
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


def open_read_only(path: Path) -> sqlite3.Connection:
    """The state database, read-only; StatusError if it is missing or not a database."""
    if not path.is_file():
        raise StatusError(f"no state database at {path} (has the daemon run yet?)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as error:
        raise StatusError(f"cannot read state database {path}: {error}") from None
    return db


def read_status(
    path: Path, configured: Sequence[WatchedSession] = (), *, now: datetime | None = None
) -> StatusReport:
    """Read the status report from the database at `path`.

    The watched set is the daemon's own (written on start and reload); before
    a daemon has written one, the configured sessions stand in for it.
    """
    db = open_read_only(path)
    try:
        db.execute("BEGIN")
        try:
            return _read(db, path, configured, now or datetime.now(UTC))
        finally:
            db.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        raise StatusError(f"cannot read state database {path}: {error}") from None
    finally:
        db.close()


def _read(
    db: sqlite3.Connection, path: Path, configured: Sequence[WatchedSession], now: datetime
) -> StatusReport:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not {"meta", "sessions", "events", "outbox"} <= tables:
        raise StatusError(f"{path} is not a factory-watcher state database")
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    watched: list[tuple[str, str | None]]
    if "watched" in meta:
        watched = [(w["id"], w.get("name")) for w in json.loads(meta["watched"])]
    else:
        watched = [(w.id, w.name) for w in configured]
    states = {
        sid: (status, bool(gone))
        for sid, gone, status in db.execute(
            "SELECT session_id, json_extract(state, '$.gone'),"
            " coalesce(json_extract(state, '$.snapshot.status'),"
            " json_extract(state, '$.last.status')) FROM sessions"
        )
    }
    since = dict(
        db.execute(
            "SELECT session_id, MAX(occurred_at) FROM events WHERE type IN"
            " ('session.discovered', 'session.status_changed', 'session.deleted')"
            " GROUP BY session_id"
        ).fetchall()
    )
    polls: dict[str, tuple[Any, Any, Any]] = {}
    if "polls" in tables:
        polls = {
            sid: (at, outcome, nxt)
            for sid, at, outcome, nxt in db.execute(
                "SELECT session_id, polled_at, outcome, next_poll_at FROM polls"
            )
        }
    notified = dict(
        db.execute(
            "SELECT lane, MAX(finished_at) FROM outbox WHERE status='delivered' GROUP BY lane"
        ).fetchall()
    )
    sessions = []
    for sid, name in watched:
        status, gone = states.get(sid, (None, False))
        polled_at, outcome, next_poll = polls.get(sid, (None, None, None))
        sessions.append(
            SessionStatus(
                id=sid,
                name=name,
                status=status,
                gone=gone,
                since=_dt(since.get(sid)),
                last_poll=_dt(polled_at),
                last_poll_outcome=outcome,
                next_poll=_dt(next_poll),
                last_notification=_dt(notified.get(sid)),
            )
        )
    return StatusReport(
        database=str(path),
        generated_at=now,
        heartbeat_at=_dt(meta.get("heartbeat_at")),
        api_state=meta.get("api_state"),
        api_since=_dt(meta.get("api_since")),
        api_reason=meta.get("api_reason") or None,
        sessions=tuple(sessions),
        targets=_targets(db),
        dead_letters=_dead_letters(db),
    )


def _targets(db: sqlite3.Connection) -> tuple[TargetStatus, ...]:
    counts: dict[str, dict[str, Any]] = {}
    for target, status, retrying, count, next_at in db.execute(
        "SELECT target, status, attempts > 0, COUNT(*), MIN(next_attempt_at) FROM outbox"
        " WHERE status IN ('pending', 'dead') GROUP BY target, status, attempts > 0"
    ):
        entry = counts.setdefault(target, {"pending": 0, "retrying": 0, "next": None, "dead": 0})
        if status == "dead":
            entry["dead"] += count
        else:
            entry["pending"] += count
            if retrying:
                entry["retrying"] += count
                entry["next"] = next_at
    last_errors = dict(
        db.execute(
            "SELECT target, last_error FROM outbox o WHERE status='dead' AND id ="
            " (SELECT MAX(id) FROM outbox WHERE target=o.target AND status='dead')"
        ).fetchall()
    )
    return tuple(
        TargetStatus(
            target=target,
            pending=entry["pending"],
            retrying=entry["retrying"],
            next_attempt=_dt(entry["next"]),
            dead=entry["dead"],
            last_error=last_errors.get(target),
        )
        for target, entry in sorted(counts.items())
    )


def _dead_letters(db: sqlite3.Connection) -> tuple[DeadLetter, ...]:
    rows = db.execute(
        "SELECT o.id, o.target, o.rule, e.type, e.session_id, o.attempts, o.created_at,"
        " o.finished_at, o.last_error FROM outbox o JOIN events e ON e.id = o.event_id"
        " WHERE o.status='dead' ORDER BY o.id"
    ).fetchall()
    return tuple(
        DeadLetter(
            id=r[0],
            target=r[1],
            rule=r[2],
            event=r[3],
            session=r[4],
            attempts=r[5],
            created_at=datetime.fromtimestamp(r[6], tz=UTC),
            failed_at=_dt(r[7]),
            last_error=r[8],
        )
        for r in rows
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
    }


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
    lines += [f"Factory API: {api}", "", f"sessions ({len(report.sessions)}):"]
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
    return "\n".join(lines)
