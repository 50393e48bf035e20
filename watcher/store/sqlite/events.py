"""Events' per-session sequence numbers on this backend.

Events and outbox rows are written by `watcher.store.tables.events.EventWriter`;
this module numbers them, as this backend must.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from watcher.core.model import Event
from watcher.store.sqlite.base import SqliteBase
from watcher.store.tables.base import SEQUENCE_FLOOR
from watcher.store.tables.events import EventTables as SharedEventTables


def number(db: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Give each of `events` that has none yet the next sequence of its session.

    An event is numbered when it is first routed or held, not when it is first
    stored: one that waits to settle is stored at once but sent later, after
    newer ones, and numbering it at its send keeps each target's deliveries in
    sequence order, so a receiver that drops stale sequences never drops it.
    """
    for e in events:
        row = db.execute("SELECT sequence FROM events WHERE id=?", (e.id,)).fetchone()
        if row is None or row[0] is not None:
            continue
        # A new lane starts above SEQUENCE_FLOOR, the highest number of any lane
        # retention deleted: a session forgotten and seen again never reuses one.
        (sequence,) = db.execute(
            "INSERT INTO sequences(lane, last) VALUES (?, 1 + coalesce((SELECT CAST(value"
            " AS INTEGER) FROM meta WHERE key = ?), 0))"
            " ON CONFLICT(lane) DO UPDATE SET last = last + 1 RETURNING last",
            (e.session.id if e.session else "", SEQUENCE_FLOOR),
        ).fetchone()
        db.execute("UPDATE events SET sequence=? WHERE id=?", (sequence, e.id))


class EventTables(SharedEventTables, SqliteBase):
    """The events table, its events numbered by this backend's `number`."""

    def _number(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        number(db, events)
