"""Scheduled reports' runs: the last scheduled time each report ran for.

A run is recorded with its event and outbox rows in one write transaction
(fenced, on a fenced PostgreSQL store), and only if no run for that scheduled time or a later one is
stored. The run's row is locked (`FOR UPDATE`, or the insert's unique key
when it is the first) before the check, so two writers recording the same
time at once queue it once: the second waits, then finds the first's run.
(SQLite's write lock does the same.) Events are written through the backend's
`EventWriter` hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event
from watcher.store.reportrows import report_lane, report_runs_from
from watcher.store.tables.base import seconds
from watcher.store.tables.events import EventWriter

if TYPE_CHECKING:
    from watcher.core.rules import Route

# Insert the run, or move it forward only when later: no row back means a run for
# `scheduled_at` or later is already stored. ON CONFLICT locks the existing row, so a
# concurrent writer of the same report waits for this transaction and then sees its time.
_RECORD = (
    "INSERT INTO report_runs(name, scheduled_at, recorded_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET scheduled_at = EXCLUDED.scheduled_at,"
    " recorded_at = EXCLUDED.recorded_at"
    " WHERE report_runs.scheduled_at < EXCLUDED.scheduled_at RETURNING name"
)


class ReportRunTables(EventWriter):
    """The report_runs table, written with the report's event and outbox rows."""

    def report_runs(self) -> dict[str, datetime]:
        """The last scheduled time each report ran for, by report name."""
        return report_runs_from(self._read_all("SELECT name, scheduled_at FROM report_runs"))

    def record_report(
        self,
        name: str,
        scheduled_at: datetime,
        event: Event,
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        """Record report `name`'s run for `scheduled_at` with its event and rows; new rows.

        Nothing is written (0) when a run for `scheduled_at` or later is stored.
        """
        with self._transaction() as db:
            moved = db.execute(_RECORD, (name, seconds(scheduled_at), seconds(now))).fetchone()
            if moved is None:
                return 0
            return self._insert_events(db, [event], routes, now, lane=report_lane(name))
