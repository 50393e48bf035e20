"""What a scheduled report reads: a window's events, their baselines, sessions as they are now.

The queries are plain functions of a connection so that the daemon's store
and the read-only store (`report NAME` beside a running daemon) answer the
same way, in one read transaction each. The rows are decoded after the read
by `watcher.store.reportrows`, which every backend shares: a stored row that
cannot be decoded is left out (an event) or read as unknown (a state, a
track), never raised: one bad row must not stop a report.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from watcher.core.reporthistory import ReportHistory
from watcher.store.reportrows import ReportRows, decode_report_rows, report_runs_from
from watcher.store.sqlite.base import SqliteBase, seconds

_WINDOW = (
    "SELECT body, sequence, recorded_at, session_id FROM events"
    " WHERE recorded_at > ? AND recorded_at <= ? ORDER BY recorded_at, rowid"
)
_BASELINE = (
    "SELECT body, sequence FROM events WHERE session_id = ? AND recorded_at <= ?"
    " ORDER BY recorded_at DESC, rowid DESC LIMIT 1"
)
# CASE, not AND: json_extract raises on a damaged (non-JSON) body, and only CASE
# promises that json_valid is evaluated first, so one bad row cannot fail the read.
_RUN_START = (
    "SELECT occurred_at FROM events WHERE session_id = ? AND recorded_at <= ?"
    " AND type = 'session.status_changed'"
    " AND CASE WHEN json_valid(body) THEN json_extract(body, '$.data.to') END = 'running'"
    " ORDER BY recorded_at DESC, rowid DESC LIMIT 1"
)
_SESSIONS = (
    "SELECT s.session_id, s.state, s.unwatched_since, s.stored_at, m.memory,"
    " (SELECT e.body FROM events e WHERE e.session_id = s.session_id"
    " ORDER BY e.recorded_at DESC, e.rowid DESC LIMIT 1)"
    " FROM sessions s LEFT JOIN rule_memory m ON m.session_id = s.session_id"
    " ORDER BY s.session_id"
)


def fetch_report_rows(db: sqlite3.Connection, start: datetime, end: datetime) -> ReportRows:
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
    return ReportRows([(b, q, r) for b, q, r, _ in window], sessions, baselines, run_starts)


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
    return report_runs_from(db.execute("SELECT name, scheduled_at FROM report_runs").fetchall())


class ReportTables(SqliteBase):
    """Reports' reads over the events, sessions and rule memory tables."""

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """The window's events, their sessions' baselines and every stored session now."""
        # Only the read holds the lock (polls wait for it); decoding a day of events
        # (a second for 50,000) happens after.
        with self._lock:
            rows = fetch_report_rows(self._db, start, end)
        return decode_report_rows(rows)
