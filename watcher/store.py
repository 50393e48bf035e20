"""Durable state: last session states, events and the delivery outbox (SQLite).

A poll's new state, its events and their outbox rows commit in one
transaction before anything is sent, so a crash loses nothing and can at
worst resend what was in flight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from watcher.core.model import Event, EventType, Gone, SessionRef, SessionState
from watcher.core.rules import Route
from watcher.core.snapshot import snapshot_from_dict, snapshot_to_dict

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    session_id TEXT,
    type TEXT NOT NULL,
    occurred_at REAL NOT NULL,
    body TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL REFERENCES events(id),
    target TEXT NOT NULL,
    rule TEXT NOT NULL,
    lane TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    finished_at REAL,
    handle TEXT,
    UNIQUE (event_id, target)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (target, status, lane, id);
CREATE TABLE IF NOT EXISTS discovered (
    session_id TEXT PRIMARY KEY,
    discovered_at REAL NOT NULL
);
"""
# Added to schema 1 without a version bump: older builds ignore the table.
FIRST_DISCOVERY_KEY = "first_discovery_at"


class StoreError(Exception):
    """The state database cannot be opened or is not ours."""


class OutboxStatus(StrEnum):
    """Where a notification stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification: an event for one target, with its delivery history."""

    id: int
    event: Event
    rule: str
    target: str
    status: OutboxStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    finished_at: datetime | None = None


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def event_to_json(event: Event) -> str:
    """Serialise an event for the store."""
    session = event.session
    return json.dumps(
        {
            "id": event.id,
            "type": str(event.type),
            "occurred_at": event.occurred_at.timestamp(),
            "session": None
            if session is None
            else {
                "id": session.id,
                "title": session.title,
                "status": session.status,
                "name": session.name,
                "labels": dict(session.labels),
                "url": session.url,
            },
            "data": dict(event.data),
        },
        sort_keys=True,
    )


def event_from_json(text: str) -> Event:
    """Inverse of `event_to_json`."""
    raw = json.loads(text)
    session = raw["session"]
    return Event(
        id=raw["id"],
        type=EventType(raw["type"]),
        occurred_at=datetime.fromtimestamp(raw["occurred_at"], tz=UTC),
        session=None if session is None else SessionRef(**session),
        data=raw["data"],
    )


def state_to_json(state: SessionState) -> str:
    """Serialise a session state (snapshot or gone) for the store."""
    if isinstance(state, Gone):
        last = None if state.last is None else snapshot_to_dict(state.last)
        return json.dumps({"gone": True, "last": last}, sort_keys=True)
    return json.dumps({"gone": False, "snapshot": snapshot_to_dict(state)}, sort_keys=True)


def state_from_json(session_id: str, text: str) -> SessionState:
    """Inverse of `state_to_json`."""
    raw = json.loads(text)
    if raw["gone"]:
        last = raw["last"]
        return Gone(session_id, None if last is None else snapshot_from_dict(last))
    return snapshot_from_dict(raw["snapshot"])


@dataclass(frozen=True, slots=True)
class Discovered:
    """Sessions found through the list: when discovery first ran, and which are watched."""

    first_at: datetime | None
    session_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One session's new state with its events and routes, for a batch commit."""

    session_id: str
    state: SessionState
    events: Sequence[Event] = ()
    routes: Sequence[tuple[Event, Route]] = ()


class Store(Protocol):
    """The state store interface (SQLite today; PostgreSQL is a later option)."""

    def load_state(self, session_id: str) -> SessionState | None: ...

    def load_states(self) -> dict[str, SessionState]: ...

    def discovered(self) -> Discovered: ...

    def record_discovery(
        self,
        now: datetime,
        first_at: datetime | None,
        added: Sequence[str],
        baselines: Sequence[Recorded],
    ) -> int: ...

    def forget_discovered(self, session_ids: Sequence[str]) -> None: ...

    def record(
        self,
        session_id: str,
        state: SessionState,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int: ...

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int: ...

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow]: ...

    def next_due(self, target: str) -> datetime | None: ...

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None: ...

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None: ...

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None: ...

    def counts(self) -> Mapping[OutboxStatus, int]: ...

    def close(self) -> None: ...


class SqliteStore:
    """`Store` on one SQLite file in WAL mode with `synchronous=FULL`.

    Calls are serialised by a lock so the daemon may call from worker threads.
    `":memory:"` gives a throwaway store for unit tests.

    `durable=False` gives a connection with `synchronous=NORMAL`, for the outbox
    worker's marks (delivered, retry, dead): a power cut may then forget the
    last marks, which can only make a row be sent again, what the delivery
    contract already allows for anything in flight. What a poll records
    (snapshot, events, outbox rows) always commits with `synchronous=FULL`:
    forgetting it could lose a transition.
    """

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open state database {self.path}: {error}") from None
        self._lock = threading.Lock()

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"state database {self.path} has schema {row[0]}, newer than this "
                f"factory-watcher understands ({SCHEMA_VERSION})"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def load_state(self, session_id: str) -> SessionState | None:
        """The last stored state of a session, or None if never seen."""
        with self._lock:
            row = self._db.execute(
                "SELECT state FROM sessions WHERE session_id=?", (session_id,)
            ).fetchone()
        return None if row is None else state_from_json(session_id, row[0])

    def load_states(self) -> dict[str, SessionState]:
        """Every stored session state by id (read once at start)."""
        with self._lock:
            rows = self._db.execute("SELECT session_id, state FROM sessions").fetchall()
        return {sid: state_from_json(sid, text) for sid, text in rows}

    def discovered(self) -> Discovered:
        """When discovery first ran here, and the sessions it found that are still watched."""
        with self._lock:
            first = self._db.execute(
                "SELECT value FROM meta WHERE key=?", (FIRST_DISCOVERY_KEY,)
            ).fetchone()
            rows = self._db.execute("SELECT session_id FROM discovered").fetchall()
        return Discovered(
            None if first is None else _dt(float(first[0])), frozenset(r[0] for r in rows)
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
                    (FIRST_DISCOVERY_KEY, repr(_ts(first_at))),
                )
            db.executemany(
                "INSERT OR IGNORE INTO discovered(session_id, discovered_at) VALUES (?, ?)",
                [(sid, _ts(now)) for sid in added],
            )
            db.executemany(
                "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, ?)"
                " ON CONFLICT(session_id) DO UPDATE SET state=excluded.state,"
                " stored_at=excluded.stored_at",
                [(b.session_id, state_to_json(b.state), _ts(now)) for b in baselines],
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
            db.executemany(
                "DELETE FROM discovered WHERE session_id=?", [(sid,) for sid in session_ids]
            )

    def _insert_events(
        self,
        db: sqlite3.Connection,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        stamp = _ts(now)
        db.executemany(
            "INSERT OR IGNORE INTO events(id, session_id, type, occurred_at, body, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    e.id,
                    e.session.id if e.session else None,
                    str(e.type),
                    _ts(e.occurred_at),
                    event_to_json(e),
                    stamp,
                )
                for e in events
            ],
        )
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO outbox(event_id, target, rule, lane, status, created_at,"
            " next_attempt_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            [
                (e.id, r.target, r.rule, e.session.id if e.session else "", stamp, stamp)
                for e, r in routes
            ],
        )
        return db.total_changes - before

    def record(
        self,
        session_id: str,
        state: SessionState,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        """Store a session's new state with its events and outbox rows, atomically.

        Events and outbox rows already stored (same id, same target) are kept
        as they are, so recording the same transition twice sends it once.
        Returns how many outbox rows are new.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, ?)"
                " ON CONFLICT(session_id) DO UPDATE SET state=excluded.state,"
                " stored_at=excluded.stored_at",
                (session_id, state_to_json(state), _ts(now)),
            )
            return self._insert_events(db, events, routes, now)

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int:
        """Store events that belong to no session state (the watcher's own)."""
        with self._transaction() as db:
            return self._insert_events(db, events, routes, now)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[OutboxRow]:
        with self._lock:
            raw = self._db.execute(sql, params).fetchall()
        return [
            OutboxRow(
                id=r[0],
                event=event_from_json(r[1]),
                rule=r[2],
                target=r[3],
                status=OutboxStatus(r[4]),
                attempts=r[5],
                created_at=datetime.fromtimestamp(r[6], tz=UTC),
                next_attempt_at=datetime.fromtimestamp(r[7], tz=UTC),
                last_error=r[8],
                finished_at=_dt(r[9]),
            )
            for r in raw
        ]

    _SELECT = (
        "SELECT o.id, e.body, o.rule, o.target, o.status, o.attempts, o.created_at,"
        " o.next_attempt_at, o.last_error, o.finished_at FROM outbox o"
        " JOIN events e ON e.id = o.event_id"
    )

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow]:
        """Pending rows of `target` that may be sent now, oldest first.

        Only the oldest pending row of each (target, session) lane is eligible,
        so one session's notifications reach a target in order.
        """
        # Constant SQL; every value is a bound parameter.
        sql = (
            self._SELECT  # noqa: S608
            + " WHERE o.id IN (SELECT MIN(id) FROM outbox"
            " WHERE target=? AND status='pending' GROUP BY lane)"
            " AND o.next_attempt_at <= ? ORDER BY o.id LIMIT ?"
        )
        return self._rows(sql, (target, _ts(now), limit))

    def next_due(self, target: str) -> datetime | None:
        """When the earliest lane head of `target` becomes due, if any row is pending."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox"
                " WHERE target=? AND status='pending' GROUP BY lane)",
                (target,),
            ).fetchone()
        return _dt(row[0])

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None:
        """The destination accepted the row."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status='delivered', attempts=attempts+1, finished_at=?,"
                " handle=?, last_error=NULL WHERE id=?",
                (_ts(now), handle, row_id),
            )

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None:
        """A failed attempt; the row stays pending until `at`."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
                (_ts(at), error, row_id),
            )

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None:
        """Give up on a row; it stays listed as a dead letter with its last error."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status='dead', attempts=attempts+1, finished_at=?,"
                " last_error=? WHERE id=?",
                (_ts(now), error, row_id),
            )

    def list_outbox(self, status: OutboxStatus | None = None, limit: int = 1000) -> list[OutboxRow]:
        """Outbox rows, newest first, optionally of one status."""
        if status is None:
            return self._rows(self._SELECT + " ORDER BY o.id DESC LIMIT ?", (limit,))
        return self._rows(
            self._SELECT + " WHERE o.status=? ORDER BY o.id DESC LIMIT ?", (str(status), limit)
        )

    def retry_dead(self, now: datetime, ids: Sequence[int] = ()) -> int:
        """Make dead letters pending again (all, or those in `ids`), attempts reset."""
        with self._transaction() as db:
            sql = (
                "UPDATE outbox SET status='pending', attempts=0, created_at=?, next_attempt_at=?,"
                " finished_at=NULL WHERE status='dead'"
            )
            params: list[Any] = [_ts(now), _ts(now)]
            if ids:
                sql += f" AND id IN ({','.join('?' * len(ids))})"
                params.extend(ids)
            return db.execute(sql, params).rowcount

    def purge(self, status: OutboxStatus, ids: Sequence[int] = ()) -> int:
        """Delete delivered or dead rows (all of that status, or those in `ids`)."""
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications cannot be purged")
        with self._transaction() as db:
            sql = "DELETE FROM outbox WHERE status=?"
            params: list[Any] = [str(status)]
            if ids:
                sql += f" AND id IN ({','.join('?' * len(ids))})"
                params.extend(ids)
            return db.execute(sql, params).rowcount

    def counts(self) -> Mapping[OutboxStatus, int]:
        """How many outbox rows of each status."""
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM outbox GROUP BY status"
            ).fetchall()
        found = {OutboxStatus(s): n for s, n in rows}
        return {s: found.get(s, 0) for s in OutboxStatus}

    def integrity_ok(self) -> bool:
        """`PRAGMA integrity_check` says ok."""
        with self._lock:
            row = self._db.execute("PRAGMA integrity_check").fetchone()
        return bool(row and row[0] == "ok")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
