"""What a scheduled report reads: a window's events, their baselines, sessions as they are now.

The queries are plain functions of a connection so that the daemon's store
and the read-only store (`report NAME` beside a running daemon) answer the
same way, in one read transaction each. A stored row that cannot be decoded
is left out (an event) or read as unknown (a state, a track), never raised:
one bad row must not stop a report.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from watcher.core.model import Event, SessionState
from watcher.core.reporthistory import RecordedEvent, ReportHistory, StoredSession
from watcher.core.text import describe_error
from watcher.store.codec import event_from_json, memory_from_json, state_from_json
from watcher.store.sqlite.base import SqliteBase, maybe_moment, moment, seconds

log = logging.getLogger("watcher.store")

_WINDOW = (
    "SELECT body, sequence, recorded_at, session_id FROM events"
    " WHERE recorded_at > ? AND recorded_at <= ? ORDER BY recorded_at, rowid"
)
_BASELINE = (
    "SELECT body, sequence FROM events WHERE session_id = ? AND recorded_at <= ?"
    " ORDER BY recorded_at DESC, rowid DESC LIMIT 1"
)
_RUN_START = (
    "SELECT occurred_at FROM events WHERE session_id = ? AND recorded_at <= ?"
    " AND type = 'session.status_changed' AND json_extract(body, '$.data.to') = 'running'"
    " ORDER BY recorded_at DESC, rowid DESC LIMIT 1"
)
_SESSIONS = (
    "SELECT s.session_id, s.state, s.unwatched_since, s.stored_at, m.memory,"
    " (SELECT e.body FROM events e WHERE e.session_id = s.session_id"
    " ORDER BY e.recorded_at DESC, e.rowid DESC LIMIT 1)"
    " FROM sessions s LEFT JOIN rule_memory m ON m.session_id = s.session_id"
    " ORDER BY s.session_id"
)


def _event(body: str, sequence: int | None) -> Event | None:
    try:
        return event_from_json(body, sequence)
    except Exception as error:  # any stored text, however broken, is one bad row
        log.warning(
            "a stored event cannot be read (%s); reports leave it out", describe_error(error)
        )
        return None


def _session(
    session_id: str,
    state_text: str,
    unwatched: float | None,
    stored: float,
    memory: str | None,
    last: str | None,
) -> StoredSession:
    state: SessionState | None
    try:
        state = state_from_json(session_id, state_text)
    except Exception:  # an unreadable state is reported as unknown
        state = None
    try:
        track = None if memory is None else memory_from_json(memory).track
    except Exception:  # so is an unreadable track
        track = None
    latest = None if last is None else _event(last, 0)
    ref = None if latest is None else latest.session
    return StoredSession(session_id, state, track, ref, maybe_moment(unwatched), moment(stored))


@dataclass(frozen=True, slots=True)
class _Rows:
    """What the read transaction fetched, still as stored (decoded after the lock)."""

    events: list[tuple[str, int | None, float]]
    sessions: list[tuple[str, str, float | None, float, str | None, str | None]]
    baselines: dict[str, tuple[str, int | None]]
    run_starts: dict[str, float]


def fetch_report_rows(db: sqlite3.Connection, start: datetime, end: datetime) -> _Rows:
    """The rows a report of `(start, end]` needs, in one read transaction, undecoded."""
    low, high = seconds(start), seconds(end)
    db.execute("BEGIN")
    try:
        window = db.execute(_WINDOW, (low, high)).fetchall()
        sessions = db.execute(_SESSIONS).fetchall()
        involved = {sid for _, _, _, sid in window if sid is not None}
        involved |= {row[0] for row in sessions if low < row[3] <= high}
        baselines: dict[str, tuple[str, int | None]] = {}
        run_starts: dict[str, float] = {}
        for sid in sorted(involved):
            row = db.execute(_BASELINE, (sid, low)).fetchone()
            if row is not None:
                baselines[sid] = (row[0], row[1])
            began = db.execute(_RUN_START, (sid, low)).fetchone()
            if began is not None:
                run_starts[sid] = began[0]
    finally:
        db.execute("COMMIT")
    return _Rows([(b, q, r) for b, q, r, _ in window], sessions, baselines, run_starts)


def decode_report_rows(rows: _Rows) -> ReportHistory:
    """The history from the fetched rows; unreadable ones left out or read as unknown."""
    events: list[RecordedEvent] = []
    for body, sequence, recorded in rows.events:
        event = _event(body, sequence)
        if event is not None:
            events.append(RecordedEvent(event, moment(recorded)))
    baselines: dict[str, Event] = {}
    for sid, (body, sequence) in rows.baselines.items():
        found = _event(body, sequence)
        if found is not None:
            baselines[sid] = found
    run_starts = {sid: moment(at) for sid, at in rows.run_starts.items()}
    sessions = tuple(_session(*row) for row in rows.sessions)
    return ReportHistory(tuple(events), baselines, run_starts, sessions)


def read_report_history(db: sqlite3.Connection, start: datetime, end: datetime) -> ReportHistory:
    """`ReportContentStore.report_history` on one connection, in one read transaction."""
    return decode_report_rows(fetch_report_rows(db, start, end))


def read_report_runs(db: sqlite3.Connection) -> dict[str, datetime]:
    """The scheduled time of each report's last run, from the `report_runs` table when the
    database has one (a database no build with scheduled reports opened has none).
    """
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'report_runs'"
    ).fetchone()
    if found is None:
        return {}
    rows = db.execute("SELECT name, scheduled_at FROM report_runs").fetchall()
    return {name: moment(at) for name, at in rows}


class ReportTables(SqliteBase):
    """Reports' reads over the events, sessions and rule memory tables."""

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """The window's events, their sessions' baselines and every stored session now."""
        # Only the read holds the lock (polls wait for it); decoding a day of events
        # (a second for 50,000) happens after.
        with self._lock:
            rows = fetch_report_rows(self._db, start, end)
        return decode_report_rows(rows)
