"""The outbox on SQLite: `watcher.store.tables.outbox`, a lane's head its lowest pending id."""

from __future__ import annotations

from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.outbox import SELECT_ROWS, outbox_row, outbox_sql
from watcher.store.tables.outbox import OutboxTables as SharedOutboxTables

__all__ = ["SELECT_ROWS", "OutboxTables", "outbox_row"]


class OutboxTables(SharedOutboxTables, SqliteBase):
    """The outbox table, read in lane order and marked one row at a time."""

    _OUTBOX = outbox_sql(
        "SELECT MIN(id) FROM outbox WHERE target = ? AND status = 'pending' GROUP BY lane",
        SqliteBase._ANY_ID,
    )
