"""The events table's reads and the watcher's own events, over a backend's `EventWriter`.

A backend numbers and stores events its own way (`_number`, `_insert_events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event
from watcher.store.codec import event_from_json
from watcher.store.tables.rules import EventWriter

if TYPE_CHECKING:
    from watcher.core.rules import Route


class EventTables(EventWriter):
    """The events table: the watcher's own events, and a session's latest for `explain`."""

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int:
        """Store events that belong to no session state (the watcher's own)."""
        with self._transaction() as db:
            return self._insert_events(db, events, routes, now)

    def recent_events(self, session_id: str, limit: int = 20) -> list[Event]:
        """The latest stored events of a session, oldest first."""
        rows = self._read_all(
            "SELECT body, sequence FROM events WHERE session_id = ?"  # noqa: S608 (a dialect constant)
            f" ORDER BY recorded_at DESC, {self._INSERTION_ORDER} DESC LIMIT ?",
            (session_id, limit),
        )
        return [event_from_json(r[0], r[1]) for r in reversed(rows)]
