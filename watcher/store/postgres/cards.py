"""Live Slack cards on this backend: `watcher.store.tables.cards`."""

from __future__ import annotations

from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.cards import CardTables as SharedCardTables

__all__ = ["CardTables"]


class CardTables(SharedCardTables, PostgresBase):
    """The cards table; a card's delivered rows are marked in the card's transaction."""
