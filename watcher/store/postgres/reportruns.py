"""Scheduled reports' runs on this backend: `watcher.store.tables.reportruns`."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.reportruns import ReportRunTables as SharedReportRunTables

__all__ = ["ReportRunTables"]


class ReportRunTables(SharedReportRunTables, PostgresBase):
    """The report_runs table, written with the report's event and outbox rows."""
