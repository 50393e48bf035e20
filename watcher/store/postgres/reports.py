"""What a scheduled report reads on PostgreSQL: a window's events, baselines, sessions now.

The same rows as the SQLite store's `reports` (events' `pos` is SQLite's
rowid), fetched in one `REPEATABLE READ, READ ONLY` transaction, so one
snapshot however long the read takes, and decoded after it by
`watcher.store.reportrows`. The daemon's store and the read-only store
(`report NAME`) share these functions. Bodies are never cast to JSON in SQL:
one damaged row would fail the whole query; whether a status change started
a run is decided in Python, where a damaged body simply starts none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from watcher.core.reporthistory import ReportHistory
from watcher.store.postgres.base import PostgresBase, seconds
from watcher.store.reportrows import (
    STATUS_CHANGED,
    ReportRows,
    decode_report_rows,
    report_runs_from,
    starts_a_run,
)

# Status changes read per session at a time: a run's start is nearly always in the first page.
RUN_START_PAGE = 4
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_WINDOW = (
    "SELECT body, sequence, recorded_at, session_id FROM events"
    " WHERE recorded_at > %s AND recorded_at <= %s ORDER BY recorded_at, pos"
)
_SESSIONS = (
    "SELECT s.session_id, s.state, s.unwatched_since, s.stored_at, m.memory,"
    " (SELECT e.body FROM events e WHERE e.session_id = s.session_id"
    " ORDER BY e.recorded_at DESC, e.pos DESC LIMIT 1)"
    " FROM sessions s LEFT JOIN rule_memory m ON m.session_id = s.session_id"
    " ORDER BY s.session_id"
)
# Per session (one statement for all): its latest event at or before the window's start.
_BASELINES = (
    "SELECT s.sid, b.body, b.sequence FROM unnest(%s::text[]) AS s(sid)"
    " CROSS JOIN LATERAL (SELECT body, sequence FROM events WHERE session_id = s.sid"
    " AND recorded_at <= %s ORDER BY recorded_at DESC, pos DESC LIMIT 1) AS b"
)
# Per session: a page of its status changes at or before the start, latest first.
_STATUS_CHANGES = (
    "SELECT s.sid, c.occurred_at, c.body FROM unnest(%s::text[]) AS s(sid)"
    " CROSS JOIN LATERAL (SELECT occurred_at, body, recorded_at, pos FROM events"
    " WHERE session_id = s.sid AND recorded_at <= %s AND type = %s"
    " ORDER BY recorded_at DESC, pos DESC LIMIT %s OFFSET %s) AS c"
    " ORDER BY s.sid, c.recorded_at DESC, c.pos DESC"
)


def _run_starts(db: psycopg.Connection[Any], sessions: list[str], low: float) -> dict[str, float]:
    """When each session's latest run that began at or before `low` began (Unix seconds).

    The latest status change to running, as SQLite's json_extract finds it,
    read a page at a time for the sessions still unresolved (a damaged body
    starts no run and is passed over).
    """
    found: dict[str, float] = {}
    pending, offset = sessions, 0
    while pending:
        rows = db.execute(
            _STATUS_CHANGES, (pending, low, STATUS_CHANGED, RUN_START_PAGE, offset)
        ).fetchall()
        seen: dict[str, int] = {}
        for sid, occurred, body in rows:
            seen[sid] = seen.get(sid, 0) + 1
            if sid not in found and starts_a_run(body):
                found[sid] = occurred
        # A session with a full page and no run start yet may have one further back.
        pending = [sid for sid, n in seen.items() if n == RUN_START_PAGE and sid not in found]
        offset += RUN_START_PAGE
    return found


def fetch_report_rows(db: psycopg.Connection[Any], start: datetime, end: datetime) -> ReportRows:
    """The rows a report of `(start, end]` needs, in one read-only snapshot, undecoded."""
    low, high = seconds(start), seconds(end)
    with db.transaction():
        db.execute(_SNAPSHOT)
        # A thousand small index lookups look costly to the planner: JIT would compile
        # each statement (tens of ms) to save nothing.
        db.execute("SET LOCAL jit = off")
        window = db.execute(_WINDOW, (low, high)).fetchall()
        sessions = db.execute(_SESSIONS).fetchall()
        involved = {sid for _, _, _, sid in window if sid is not None}
        involved |= {row[0] for row in sessions if low < row[3] <= high}
        ordered = sorted(involved)
        baselines: dict[str, tuple[str, int | None]] = {
            sid: (body, sequence)
            for sid, body, sequence in db.execute(_BASELINES, (ordered, low)).fetchall()
        }
        run_starts = _run_starts(db, ordered, low) if ordered else {}
    return ReportRows([(b, q, r) for b, q, r, _ in window], sessions, baselines, run_starts)


def read_report_runs(db: psycopg.Connection[Any]) -> dict[str, datetime]:
    """The scheduled time of each report's last run, from the `report_runs` table when the
    database has one (a database no build with scheduled reports migrated has none).
    """
    present = db.execute("SELECT to_regclass('report_runs') IS NOT NULL").fetchone()
    if present is None or not present[0]:
        return {}
    return report_runs_from(db.execute("SELECT name, scheduled_at FROM report_runs").fetchall())


class ReportTables(PostgresBase):
    """Reports' reads over the events, sessions and rule memory tables."""

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """The window's events, their sessions' baselines and every stored session now."""
        # The connection goes back to the pool before decoding (a second for a busy day).
        with self._connection("cannot read") as db:
            rows = fetch_report_rows(db, start, end)
        return decode_report_rows(rows)
