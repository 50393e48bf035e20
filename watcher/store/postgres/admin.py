"""Housekeeping and figures on this backend: `watcher.store.tables.admin`."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.admin import AdminTables as SharedAdminTables

__all__ = ["AdminTables"]


class AdminTables(SharedAdminTables, PostgresBase):
    """What `status` and the metrics read, and the daemon's batched bookkeeping."""
