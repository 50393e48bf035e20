"""Events and their per-session sequence numbers, and the outbox rows that route them.

`insert_events` is the one write path for events and new outbox rows, used
by every transaction that records a poll, a timer evaluation, a discovery or
a digest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event
from watcher.store.codec import event_to_json
from watcher.store.sqlite.base import SqliteBase, seconds
from watcher.store.tables.base import SEQUENCE_FLOOR
from watcher.store.tables.events import EventTables as SharedEventTables

if TYPE_CHECKING:
    from watcher.core.rules import Route


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


def insert_events(
    db: sqlite3.Connection,
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
    db.executemany(
        "INSERT OR IGNORE INTO events(id, session_id, type, occurred_at, body, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
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
    number(db, [e for e, _ in routes])
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO outbox(event_id, target, rule, lane, status, created_at,"
        " next_attempt_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
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
    return db.total_changes - before


class EventTables(SharedEventTables, SqliteBase):
    """The events table, written by this backend's `number` and `insert_events`."""

    def _number(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        number(db, events)

    def _insert_events(
        self,
        db: sqlite3.Connection,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        return insert_events(db, events, routes, now)
