"""The events table's reads and the watcher's own events, over a backend's `EventWriter`.

`EventWriter` is the one write path for events and new outbox rows (and a
rule evaluation's rows), used by every transaction that records a poll, a
timer evaluation, a discovery, a digest or a report; a backend numbers events
its own way (`_number`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from watcher.core.model import Event
from watcher.core.text import describe_error
from watcher.store.codec import event_from_json, event_to_json, memory_to_json
from watcher.store.tables.base import TableBase, seconds

if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import Evaluation

log = logging.getLogger("watcher.store")

DECISIONS_KEPT_PER_SESSION = 200


class EventWriter(TableBase):
    """How a backend stores events and numbers them; the shared mixins write through it."""

    def _number(self, db: Any, events: Sequence[Event]) -> None:
        """Give each unnumbered event the next sequence number of its session's lane."""
        raise NotImplementedError

    def _insert_events(
        self,
        db: Any,
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
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
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
        self._number(db, [e for e, _ in routes])
        cursor = db.executemany(
            "INSERT INTO outbox(event_id, target, rule, lane, status, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)"
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
        return max(int(cursor.rowcount), 0)

    def _write_evaluation(
        self, db: Any, session_id: str, evaluation: Evaluation, now: datetime
    ) -> None:
        """Store a rule evaluation's memory, held notifications and decisions (capped)."""
        db.execute(
            "INSERT INTO rule_memory(session_id, memory, wake_at) VALUES (?, ?, ?)"
            " ON CONFLICT (session_id) DO UPDATE SET memory = EXCLUDED.memory,"
            " wake_at = EXCLUDED.wake_at",
            (
                session_id,
                memory_to_json(evaluation.memory),
                None if evaluation.wake_at is None else seconds(evaluation.wake_at),
            ),
        )
        stamp = seconds(now)
        if evaluation.held:
            self._number(db, [h.event for h in evaluation.held])
            db.executemany(
                "INSERT INTO held(target, quiet_window, release_at, event_id, rule, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, target) DO NOTHING",
                [
                    (h.target, h.window, seconds(h.release_at), h.event.id, h.rule, stamp)
                    for h in evaluation.held
                ],
            )
        if not evaluation.decisions:
            return
        db.executemany(
            "INSERT INTO decisions(session_id, rule, event_id, event_type, outcome, reason, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (session_id, d.rule, d.event.id, str(d.event.type), str(d.outcome), d.reason, stamp)
                for d in evaluation.decisions
            ],
        )
        db.execute(
            "DELETE FROM decisions WHERE session_id = ? AND id <= (SELECT id FROM decisions"
            " WHERE session_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (session_id, session_id, DECISIONS_KEPT_PER_SESSION),
        )


class EventTables(EventWriter):
    """The events table: the watcher's own events, and a session's latest for `explain`."""

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int:
        """Store events that belong to no session state (the watcher's own)."""
        with self._transaction() as db:
            return self._insert_events(db, events, routes, now)

    def recent_events(self, session_id: str, limit: int = 20) -> list[Event]:
        """The latest stored events of a session, oldest first; unreadable ones left out, logged."""
        rows = self._read_all(
            "SELECT id, body, sequence FROM events WHERE session_id = ?"  # noqa: S608 (a dialect constant)
            f" ORDER BY recorded_at DESC, {self._INSERTION_ORDER} DESC LIMIT ?",
            (session_id, limit),
        )
        events: list[Event] = []
        for event_id, body, sequence in reversed(rows):
            try:
                events.append(event_from_json(body, sequence))
            except Exception as error:  # any stored body, however broken, is one bad row
                # `explain` must still show the rest of the session.
                log.warning("stored event %s cannot be read (%s)", event_id, describe_error(error))
        return events
