"""Retention on SQLite: `watcher.store.tables.retention`, with its own figures."""

from __future__ import annotations

from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.retention import PRUNED_KEY
from watcher.store.tables.retention import RetentionTables as SharedRetentionTables

__all__ = ["PRUNED_KEY", "RetentionTables"]


class RetentionTables(SharedRetentionTables, SqliteBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table, over the database's whole life."""
        rows = self._read_all(
            # A range of the primary key, not a LIKE, so the index answers it.
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
            (PRUNED_KEY, PRUNED_KEY[:-1] + chr(ord(PRUNED_KEY[-1]) + 1)),
        )
        return {key.removeprefix(PRUNED_KEY): int(value) for key, value in rows}

    def database_bytes(self) -> int:
        """The database's size: its pages (freed pages are reused, not returned)."""
        count = self._read_one("PRAGMA page_count")[0]
        size = self._read_one("PRAGMA page_size")[0]
        return int(count) * int(size)
