"""Housekeeping and figures on this backend: `watcher.store.tables.admin`."""

from __future__ import annotations

from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.admin import AdminTables as SharedAdminTables

__all__ = ["AdminTables"]


class AdminTables(SharedAdminTables, SqliteBase):
    """What `status` and the metrics read, and the daemon's batched bookkeeping."""
