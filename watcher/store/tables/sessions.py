"""Sessions' last states and the sessions discovery found, committed with their events.

Each state is stored with what `status` shows of it (`status`, `gone`; the
last change and notification are kept by the schema's triggers), and is read
back only for the sessions asked for. A state that cannot be decoded is
returned as unreadable and set aside (`sessions_set_aside`), never raised.
Events are written through the backend's `EventWriter` hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event, Gone, SessionState
from watcher.core.text import describe_error
from watcher.store.codec import state_from_json, state_to_json
from watcher.store.rows import Discovered, Recorded, StoredStates, UnreadableState
from watcher.store.tables.base import maybe_moment, seconds
from watcher.store.tables.events import EventWriter

if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import Evaluation

log = logging.getLogger("watcher.store")
FIRST_DISCOVERY_KEY = "first_discovery_at"

# `status` and `gone` are kept with the state so that `status` reads columns, not documents.
_UPSERT_STATE = (
    "INSERT INTO sessions(session_id, state, stored_at, status, gone)"
    " VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET state = EXCLUDED.state,"
    " stored_at = EXCLUDED.stored_at, status = EXCLUDED.status, gone = EXCLUDED.gone"
)


def _state_row(session_id: str, state: SessionState, at: float) -> tuple[object, ...]:
    """The parameters of `_UPSERT_STATE` for one session's state stored at `at`."""
    if isinstance(state, Gone):
        status = None if state.last is None else state.last.status
        return (session_id, state_to_json(state), at, status, 1)
    return (session_id, state_to_json(state), at, state.status, 0)


class SessionTables(EventWriter):
    """The sessions and discovered tables (and discovery's first run in meta)."""

    def load_state(self, session_id: str) -> SessionState | None:
        """The last stored state of a session, or None if never seen (or unreadable).

        One unreadable row must not stop this session's polls (one added by a
        reload, after start-up set the others aside): it is logged and the
        session starts afresh; the poll's new state replaces the row.
        """
        row = self._read_one("SELECT state FROM sessions WHERE session_id = ?", (session_id,))
        if row is None:
            return None
        try:
            return state_from_json(session_id, row[0])
        except Exception as error:  # any stored text, however broken, is one bad row
            log.warning(
                "stored state of session %s cannot be read (%s); its next poll is a new baseline",
                session_id,
                describe_error(error),
            )
            return None

    def load_states(self, session_ids: Collection[str]) -> StoredStates:
        """The stored states of `session_ids` (read at start: the watched sessions).

        Reads only the rows asked for, so start-up costs the same however many
        sessions were ever stored. A row that cannot be decoded never raises:
        it is returned as unreadable, with the reason, for `set_aside_states`.
        """
        rows = self._read_all(
            "SELECT session_id, state FROM sessions WHERE session_id "  # noqa: S608 (a dialect constant)
            + self._ANY_TEXT,
            (self._list(sorted(session_ids)),),
        )
        states: dict[str, SessionState] = {}
        unreadable: list[UnreadableState] = []
        for sid, text in rows:
            try:
                states[sid] = state_from_json(sid, text)
            except Exception as error:  # any stored text, however broken, is one bad row
                reason = f"stored state cannot be read: {describe_error(error)}"
                unreadable.append(UnreadableState(sid, reason))
        return StoredStates(states, tuple(unreadable))

    def set_aside_states(self, unreadable: Sequence[UnreadableState], now: datetime) -> None:
        """Move unreadable session rows to `sessions_set_aside`, with their reasons.

        The session then has no stored state: its next poll is a new baseline.
        """
        with self._transaction() as db:
            for row in unreadable:
                db.execute(
                    "INSERT INTO sessions_set_aside(session_id, state, reason, set_aside_at)"
                    " SELECT session_id, state, ?, ? FROM sessions WHERE session_id = ?",
                    (row.reason, seconds(now), row.session_id),
                )
                db.execute("DELETE FROM sessions WHERE session_id = ?", (row.session_id,))

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
            db.execute(_UPSERT_STATE, _state_row(session_id, state, seconds(now)))
            new = self._insert_events(db, events, routes, now)
            if evaluation is not None:
                self._write_evaluation(db, session_id, evaluation, now)
            return new

    def discovered(self) -> Discovered:
        """When discovery first ran here, and the sessions it found that are still watched."""
        with self._reading() as db:
            first = db.execute(
                "SELECT value FROM meta WHERE key = ?", (FIRST_DISCOVERY_KEY,)
            ).fetchone()
            rows = db.execute("SELECT session_id FROM discovered").fetchall()
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
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                    (FIRST_DISCOVERY_KEY, repr(seconds(first_at))),
                )
            if added:
                db.executemany(
                    "INSERT INTO discovered(session_id, discovered_at) VALUES (?, ?)"
                    " ON CONFLICT (session_id) DO NOTHING",
                    [(sid, seconds(now)) for sid in added],
                )
            if baselines:
                db.executemany(
                    _UPSERT_STATE,
                    [_state_row(b.session_id, b.state, seconds(now)) for b in baselines],
                )
            return self._insert_events(
                db,
                [e for b in baselines for e in b.events],
                [r for b in baselines for r in b.routes],
                now,
            )

    def forget_discovered(self, session_ids: Sequence[str]) -> None:
        """Stop remembering sessions that left the list (their last states are kept)."""
        with self._transaction() as db:
            if session_ids:
                db.execute(
                    "DELETE FROM discovered WHERE session_id "  # noqa: S608 (a dialect constant)
                    + self._ANY_TEXT,
                    (self._list(session_ids),),
                )
