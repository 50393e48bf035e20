"""Sessions' last states and the sessions discovery found, committed with their events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event, SessionState
from watcher.store.codec import state_from_json, state_to_json
from watcher.store.rows import Discovered, Recorded
from watcher.store.sqlite.base import SqliteBase, maybe_moment, seconds
from watcher.store.sqlite.events import insert_events
from watcher.store.sqlite.rules import write_evaluation

if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import Evaluation

FIRST_DISCOVERY_KEY = "first_discovery_at"

_UPSERT_STATE = (
    "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, ?)"
    " ON CONFLICT(session_id) DO UPDATE SET state=excluded.state,"
    " stored_at=excluded.stored_at"
)


class SessionTables(SqliteBase):
    """The sessions and discovered tables (and discovery's first run in meta)."""

    def load_state(self, session_id: str) -> SessionState | None:
        """The last stored state of a session, or None if never seen."""
        row = self._read_one("SELECT state FROM sessions WHERE session_id=?", (session_id,))
        return None if row is None else state_from_json(session_id, row[0])

    def load_states(self) -> dict[str, SessionState]:
        """Every stored session state by id (read once at start)."""
        rows = self._read_all("SELECT session_id, state FROM sessions")
        return {sid: state_from_json(sid, text) for sid, text in rows}

    def record(
        self,
        session_id: str,
        state: SessionState,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
        *,
        evaluation: Evaluation | None = None,
    ) -> int:
        """Store a session's new state with its events and outbox rows, atomically.

        Events and outbox rows already stored (same id, same target) are kept
        as they are, so recording the same transition twice sends it once.
        With `evaluation`, the rules' memory, decisions and held notifications
        commit in the same transaction. Returns how many outbox rows are new.
        """
        with self._transaction() as db:
            db.execute(_UPSERT_STATE, (session_id, state_to_json(state), seconds(now)))
            new = insert_events(db, events, routes, now)
            if evaluation is not None:
                write_evaluation(db, session_id, evaluation, now)
            return new

    def discovered(self) -> Discovered:
        """When discovery first ran here, and the sessions it found that are still watched."""
        with self._lock:
            first = self._db.execute(
                "SELECT value FROM meta WHERE key=?", (FIRST_DISCOVERY_KEY,)
            ).fetchone()
            rows = self._db.execute("SELECT session_id FROM discovered").fetchall()
        return Discovered(
            None if first is None else maybe_moment(float(first[0])),
            frozenset(r[0] for r in rows),
        )

    def record_discovery(
        self,
        now: datetime,
        first_at: datetime | None,
        added: Sequence[str],
        baselines: Sequence[Recorded],
    ) -> int:
        """Remember newly discovered sessions and their baseline states, atomically.

        `first_at` is stored once, by the first discovery; later values are
        ignored. Returns how many outbox rows are new.
        """
        with self._transaction() as db:
            if first_at is not None:
                db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                    (FIRST_DISCOVERY_KEY, repr(seconds(first_at))),
                )
            db.executemany(
                "INSERT OR IGNORE INTO discovered(session_id, discovered_at) VALUES (?, ?)",
                [(sid, seconds(now)) for sid in added],
            )
            db.executemany(
                _UPSERT_STATE,
                [(b.session_id, state_to_json(b.state), seconds(now)) for b in baselines],
            )
            return insert_events(
                db,
                [e for b in baselines for e in b.events],
                [r for b in baselines for r in b.routes],
                now,
            )

    def forget_discovered(self, session_ids: Sequence[str]) -> None:
        """Stop remembering sessions that left the list (their last states are kept)."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM discovered WHERE session_id=?", [(sid,) for sid in session_ids]
            )

    def session_statuses(self) -> dict[str, tuple[str | None, bool]]:
        """Every stored session: (last known status, gone?)."""
        rows = self._read_all(
            "SELECT session_id, json_extract(state, '$.gone'),"
            " coalesce(json_extract(state, '$.snapshot.status'),"
            " json_extract(state, '$.last.status')) FROM sessions"
        )
        return {sid: (status, bool(gone)) for sid, gone, status in rows}
