"""The rules' tables on this backend: the shared `watcher.store.tables.rules` over its events."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.rules import DECISIONS_KEPT_PER_SESSION
from watcher.store.tables.rules import RuleTables as SharedRuleTables

__all__ = ["DECISIONS_KEPT_PER_SESSION", "RuleTables"]


class RuleTables(SharedRuleTables, PostgresBase):
    """Rule memory, held digests, mutes and decisions (all shared; events via `EventTables`)."""
