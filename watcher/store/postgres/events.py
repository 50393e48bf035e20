"""Events' per-session sequence numbers on this backend.

Events and outbox rows are written by `watcher.store.tables.events.EventWriter`;
this module numbers them, as this backend must.
Two writers never share a number: the event row is locked before
it is numbered, and a lane's counter is bumped by one atomic upsert.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from watcher.core.model import Event
from watcher.store.postgres.base import PostgresBase
from watcher.store.tables.base import SEQUENCE_FLOOR
from watcher.store.tables.events import EventTables as SharedEventTables


def number(db: psycopg.Cursor[Any], events: Sequence[Event]) -> None:
    """Give each of `events` that has none yet the next sequence of its session.

    Numbered when first routed or held, not when stored (see the SQLite
    store's `number`). `FOR UPDATE` makes a second writer numbering the same
    event wait and then see the number the first gave it.
    """
    for e in events:
        # One statement: lock the event row if still unnumbered (a writer that numbered it
        # meanwhile makes the row drop out once its lock is released), bump the lane's
        # counter, store the number. A new lane starts above SEQUENCE_FLOOR, the highest
        # number of any lane retention deleted: a session seen again never reuses one.
        db.execute(
            "WITH e AS (SELECT id FROM events WHERE id = %s AND sequence IS NULL FOR UPDATE),"
            " n AS (INSERT INTO sequences(lane, last) SELECT %s, 1 + coalesce((SELECT"
            " value::bigint FROM meta WHERE key = %s), 0) WHERE EXISTS (SELECT 1 FROM e)"
            " ON CONFLICT (lane) DO UPDATE SET last = sequences.last + 1 RETURNING last)"
            " UPDATE events SET sequence = n.last FROM n, e WHERE events.id = e.id",
            (e.id, e.session.id if e.session else "", SEQUENCE_FLOOR),
        )


class EventTables(SharedEventTables, PostgresBase):
    """The events table, its events numbered by this backend's `number`."""

    def _number(self, db: psycopg.Cursor[Any], events: Sequence[Event]) -> None:
        number(db, events)
