"""Scheduled reports' runs: the last scheduled time each report ran for.

A run is recorded with its event and outbox rows in one transaction, and only
if no run for that scheduled time or a later one is stored: two daemons (or a
daemon restarted at the same moment) never queue one scheduled time twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event
from watcher.store.reportrows import report_lane
from watcher.store.sqlite.base import SqliteBase, moment, seconds
from watcher.store.sqlite.events import insert_events

if TYPE_CHECKING:
    from watcher.core.rules import Route


class ReportRunTables(SqliteBase):
    """The report_runs table, written with the report's event and outbox rows."""

    def report_runs(self) -> dict[str, datetime]:
        """The last scheduled time each report ran for, by report name."""
        rows = self._read_all("SELECT name, scheduled_at FROM report_runs")
        return {name: moment(at) for name, at in rows}

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
        at = seconds(scheduled_at)
        with self._transaction() as db:
            row = db.execute(
                "SELECT scheduled_at FROM report_runs WHERE name=?", (name,)
            ).fetchone()
            if row is not None and row[0] >= at:
                return 0
            db.execute(
                "INSERT INTO report_runs(name, scheduled_at, recorded_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET scheduled_at=excluded.scheduled_at,"
                " recorded_at=excluded.recorded_at",
                (name, at, seconds(now)),
            )
            return insert_events(db, [event], routes, now, lane=report_lane(name))
