"""Retention on PostgreSQL: `watcher.store.tables.retention`, with its own figures."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.retention import PRUNED_KEY
from watcher.store.tables.retention import RetentionTables as SharedRetentionTables

__all__ = ["PRUNED_KEY", "RetentionTables"]


class RetentionTables(SharedRetentionTables, PostgresBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table, over the database's whole life."""
        rows = self._read_all(
            "SELECT key, value FROM meta WHERE starts_with(key, %s)", (PRUNED_KEY,)
        )
        return {key.removeprefix(PRUNED_KEY): int(value) for key, value in rows}

    def database_bytes(self) -> int:
        """The database's size on disk (`pg_database_size`)."""
        return int(self._read_one("SELECT pg_database_size(current_database())")[0])
