"""Sessions' last states and discovery here: `watcher.store.tables.sessions`."""

from __future__ import annotations

from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.sessions import FIRST_DISCOVERY_KEY
from watcher.store.tables.sessions import SessionTables as SharedSessionTables

__all__ = ["FIRST_DISCOVERY_KEY", "SessionTables"]


class SessionTables(SharedSessionTables, SqliteBase):
    """The sessions and discovered tables (and discovery's first run in meta)."""
