"""Events and their per-session sequence numbers, and the outbox rows that route them.

`insert_events` is the one write path for events and new outbox rows, used
by every transaction that records a poll, a timer evaluation, a discovery or
a digest. Two writers never share a number: the event row is locked before
it is numbered, and a lane's counter is bumped by one atomic upsert.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from watcher.core.model import Event
from watcher.store.codec import event_to_json
from watcher.store.postgres.base import PostgresBase, seconds
from watcher.store.tables.base import SEQUENCE_FLOOR
from watcher.store.tables.events import EventTables as SharedEventTables

if TYPE_CHECKING:
    from watcher.core.rules import Route


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


def insert_events(
    db: psycopg.Cursor[Any],
    events: Sequence[Event],
    routes: Sequence[tuple[Event, Route]],
    now: datetime,
    *,
    lane: str | None = None,
) -> int:
    """Store `events` and queue `routes` (both kept as they are if already there); new rows.

    Each row's lane is its event's session (none: ""), or `lane` when given
    (a scheduled report's own lane, so reports never wait behind a session).
    """
    stamp = seconds(now)
    if events:
        db.executemany(
            "INSERT INTO events(id, session_id, type, occurred_at, body, recorded_at)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
            [
                (
                    e.id,
                    e.session.id if e.session else None,
                    str(e.type),
                    seconds(e.occurred_at),
                    event_to_json(e),
                    stamp,
                )
                for e in events
            ],
        )
    if not routes:
        return 0
    number(db, [e for e, _ in routes])
    db.executemany(
        "INSERT INTO outbox(event_id, target, rule, lane, status, created_at,"
        " next_attempt_at) VALUES (%s, %s, %s, %s, 'pending', %s, %s)"
        " ON CONFLICT (event_id, target) DO NOTHING",
        [
            (
                e.id,
                r.target,
                r.rule,
                (e.session.id if e.session else "") if lane is None else lane,
                stamp,
                stamp,
            )
            for e, r in routes
        ],
    )
    return max(db.rowcount, 0)


class EventTables(SharedEventTables, PostgresBase):
    """The events table, written by this backend's `number` and `insert_events`."""

    def _number(self, db: psycopg.Cursor[Any], events: Sequence[Event]) -> None:
        number(db, events)

    def _insert_events(
        self,
        db: psycopg.Cursor[Any],
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        return insert_events(db, events, routes, now)
