"""Retention on SQLite: `watcher.store.tables.retention`, with its own figures."""

from __future__ import annotations

from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.retention import RetentionTables as SharedRetentionTables

__all__ = ["RetentionTables"]


class RetentionTables(SharedRetentionTables, SqliteBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def database_bytes(self) -> int:
        """The database's size: its pages (freed pages are reused, not returned)."""
        count = self._read_one("PRAGMA page_count")[0]
        size = self._read_one("PRAGMA page_size")[0]
        return int(count) * int(size)
