"""Retention on PostgreSQL: `watcher.store.tables.retention`, with its own figures."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.retention import RetentionTables as SharedRetentionTables

__all__ = ["RetentionTables"]


class RetentionTables(SharedRetentionTables, PostgresBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def database_bytes(self) -> int:
        """The database's size on disk (`pg_database_size`)."""
        return int(self._read_one("SELECT pg_database_size(current_database())")[0])
