"""Durable state: last session states, events and the delivery outbox (SQLite).

A poll's new state, its events and their outbox rows commit in one
transaction before anything is sent, so a crash loses nothing and can at
worst resend what was in flight.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from watcher.core.model import Event, EventType, Gone, SessionRef, SessionState, TokenUsage

# Re-exported (the `as` form is mypy's explicit re-export): the states are part of
# the store's interface; they live in core so the command line can name them cheaply.
from watcher.core.outbox import OutboxStatus as OutboxStatus
from watcher.core.snapshot import (
    from_unix_ms,
    snapshot_from_dict,
    snapshot_to_dict,
    to_unix_ms,
)
from watcher.core.text import describe_error, safe_json

# The rules' state is imported where it is read or written, not here: the outbox
# commands (`outbox list`) open the store and should not pay for the rule engine.
if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import (
        Evaluation,
        Held,
        Mute,
        MuteKind,
        Outcome,
        SessionMemory,
    )

log = logging.getLogger("watcher.store")

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
CREATE TABLE IF NOT EXISTS polls (
    session_id TEXT PRIMARY KEY,
    polled_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    next_poll_at REAL
);
CREATE TABLE IF NOT EXISTS rule_memory (
    session_id TEXT PRIMARY KEY,
    memory TEXT NOT NULL,
    wake_at REAL
);
CREATE INDEX IF NOT EXISTS rule_memory_wake ON rule_memory (wake_at);
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    quiet_window TEXT NOT NULL,
    release_at REAL NOT NULL,
    event_id TEXT NOT NULL REFERENCES events(id),
    rule TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (event_id, target)
);
CREATE TABLE IF NOT EXISTS mutes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    until REAL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT,
    rule TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_session ON decisions (session_id, id);
CREATE TABLE IF NOT EXISTS discovered (
    session_id TEXT PRIMARY KEY,
    discovered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequences (
    lane TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cards (
    target TEXT NOT NULL,
    session_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    ts TEXT,
    marker TEXT NOT NULL,
    posting_since REAL,
    replaced_ts TEXT,
    replaced_reason TEXT,
    replaced_url TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (target, session_id)
);
"""
# Added to schema 1 without a version bump: older builds ignore the new tables
# (sequences, cards) and the events' `sequence` column (added by `_add_sequences`
# when it is missing).
FIRST_DISCOVERY_KEY = "first_discovery_at"

DECISIONS_KEPT_PER_SESSION = 200


class StoreError(Exception):
    """The state database cannot be opened or is not ours."""


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

    @property
    def event_type(self) -> str:
        """The event's type, as `UnreadableRow` has it too."""
        return str(self.event.type)

    @property
    def session_id(self) -> str | None:
        """The event's session, as `UnreadableRow` has it too."""
        return self.event.session.id if self.event.session else None


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """An outbox row whose stored event cannot be decoded; delivery dead-letters it.

    It carries what the outbox and events tables say in their own columns, so
    it can still be listed, retried or purged.
    """

    id: int
    event_id: str
    event_type: str
    session_id: str | None
    rule: str
    target: str
    status: OutboxStatus
    attempts: int
    created_at: datetime
    last_error: str | None
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Card:
    """The live Slack card of one session for one target.

    `ts` is None while no card is known: `posting_since` then says a post with
    `marker` in its metadata may have reached Slack since that time (we
    crashed before learning its `ts`), so it is looked up before posting again.
    `replaced_ts` is the card this one replaces, and why.
    """

    target: str
    session_id: str
    channel: str
    ts: str | None
    marker: str
    posting_since: datetime | None = None
    replaced_ts: str | None = None
    replaced_reason: str | None = None
    replaced_url: str | None = None  # the replaced card's permalink, when Slack gave one


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _dumps(value: Any) -> str:
    # Text is made safe where it enters (API bodies, config); this keeps the
    # store's promise of valid UTF-8 even for a path that forgot.
    return json.dumps(safe_json(value), sort_keys=True)


def event_to_json(event: Event) -> str:
    """Serialise an event for the store (always valid UTF-8: unencodable text is replaced)."""
    session = event.session
    return _dumps(
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
                "tags": list(session.tags),
                "model": session.model,
                **_session_facts(session),
            },
            "data": dict(event.data),
        }
    )


def event_from_json(text: str, sequence: int | None = 0) -> Event:
    """Inverse of `event_to_json`; `sequence` comes from the events table's own column.

    Events stored before API text was made safe on entry may hold lone
    surrogates; they are replaced here, so such an event still renders.
    """
    raw = safe_json(json.loads(text))
    session = raw["session"]
    return Event(
        id=raw["id"],
        type=EventType(raw["type"]),
        occurred_at=datetime.fromtimestamp(raw["occurred_at"], tz=UTC),
        session=None if session is None else _session_from_dict(session),
        data=raw["data"],
        sequence=sequence or 0,
    )


def _session_facts(session: SessionRef) -> dict[str, Any]:
    """The card facts of a session ref; absent ones are left out, as older rows have them."""
    facts: dict[str, Any] = {}
    if session.created_at is not None:
        facts["created_at"] = to_unix_ms(session.created_at)
    if session.message_count is not None:
        facts["message_count"] = session.message_count
    if session.active_ms is not None:
        facts["active_ms"] = session.active_ms
    if session.usage is not None:
        facts["usage"] = asdict(session.usage)
    return facts


def _session_from_dict(session: Mapping[str, Any]) -> SessionRef:
    """A stored session ref; rows written before the card facts existed lack them (None)."""
    known = {"id", "title", "status", "name", "labels", "url", "model", "message_count"}
    fields: dict[str, Any] = {k: v for k, v in session.items() if k in known}
    created = session.get("created_at")
    usage = session.get("usage")
    active = session.get("active_ms")
    return SessionRef(
        **fields,
        tags=tuple(session.get("tags", ())),
        created_at=None if created is None else from_unix_ms(created),
        active_ms=None if active is None else float(active),
        usage=None if usage is None else TokenUsage(**usage),
    )


def state_to_json(state: SessionState) -> str:
    """Serialise a session state (snapshot or gone) for the store."""
    if isinstance(state, Gone):
        last = None if state.last is None else snapshot_to_dict(state.last)
        return _dumps({"gone": True, "last": last})
    return _dumps({"gone": False, "snapshot": snapshot_to_dict(state)})


def state_from_json(session_id: str, text: str) -> SessionState:
    """Inverse of `state_to_json`."""
    raw = json.loads(text)
    if raw["gone"]:
        last = raw["last"]
        return Gone(session_id, None if last is None else snapshot_from_dict(last))
    return snapshot_from_dict(raw["snapshot"])


@dataclass(frozen=True, slots=True)
class PollMark:
    """The last poll of a session as `status` shows it (written in batches, not per poll)."""

    session_id: str
    polled_at: datetime
    outcome: str
    next_poll_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """Outbox depth for the metrics: pending and dead rows by target, oldest pending row."""

    pending: Mapping[str, int]
    dead: Mapping[str, int]
    oldest_pending_at: datetime | None


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A stored notification held for a quiet-hours digest."""

    id: int
    held: Held


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A stored rule decision, for `explain`."""

    at: datetime
    rule: str
    event_id: str
    event_type: str
    outcome: Outcome
    reason: str


def memory_to_json(memory: SessionMemory) -> str:
    """Serialise a session's rule memory for the store."""
    from watcher.core.lifecycle import track_to_dict

    rules: dict[str, Any] = {}
    for name, rule in memory.rules.items():
        rules[name] = {
            "settling": [
                {
                    "event": json.loads(event_to_json(s.event)),
                    "epoch": s.epoch,
                    "due": to_unix_ms(s.due),
                }
                for s in rule.settling
            ],
            "episodes": {
                kind: {"since": to_unix_ms(e.since), "fired": e.fired}
                for kind, e in rule.episodes.items()
            },
            "crossed": sorted(rule.crossed),
            "last_sent": None if rule.last_sent is None else to_unix_ms(rule.last_sent),
        }
    track = None if memory.track is None else track_to_dict(memory.track)
    return json.dumps({"track": track, "rules": rules}, sort_keys=True)


def memory_from_json(text: str) -> SessionMemory:
    """Inverse of `memory_to_json`."""
    from watcher.core.lifecycle import track_from_dict
    from watcher.core.rulestate import Episode, RuleMemory, SessionMemory, Settling

    raw = json.loads(text)
    rules: dict[str, RuleMemory] = {}
    for name, rule in raw["rules"].items():
        rules[name] = RuleMemory(
            settling=tuple(
                Settling(
                    event_from_json(json.dumps(s["event"])), s["epoch"], from_unix_ms(s["due"])
                )
                for s in rule["settling"]
            ),
            episodes={
                kind: Episode(from_unix_ms(e["since"]), e["fired"])
                for kind, e in rule["episodes"].items()
            },
            crossed=frozenset(rule["crossed"]),
            last_sent=None if rule["last_sent"] is None else from_unix_ms(rule["last_sent"]),
        )
    track = raw["track"]
    return SessionMemory(None if track is None else track_from_dict(track), rules)


def _utc(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


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
        *,
        evaluation: Evaluation | None = None,
    ) -> int: ...

    def load_memory(self, session_id: str) -> SessionMemory: ...

    def record_evaluation(self, session_id: str, evaluation: Evaluation, now: datetime) -> int: ...

    def due_sessions(self, now: datetime) -> list[str]: ...

    def due_held(self, now: datetime) -> list[HeldRow]: ...

    def release_digests(
        self, digests: Sequence[tuple[Event, Route]], held_ids: Sequence[int], now: datetime
    ) -> int: ...

    def active_mutes(self, now: datetime) -> list[Mute]: ...

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int: ...

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]: ...

    def next_due(self, target: str) -> datetime | None: ...

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None: ...

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None: ...

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None: ...

    def counts(self) -> Mapping[OutboxStatus, int]: ...

    def pending_lane(
        self, target: str, session_id: str, limit: int
    ) -> list[OutboxRow | UnreadableRow]: ...

    def card(self, target: str, session_id: str) -> Card | None: ...

    def intend_card(self, card: Card, now: datetime) -> None: ...

    def drop_card_intent(self, target: str, session_id: str, now: datetime) -> None: ...

    def record_card(
        self, target: str, session_id: str, ts: str, delivered: Sequence[int], now: datetime
    ) -> None: ...

    def record_housekeeping(self, polls: Sequence[PollMark], meta: Mapping[str, str]) -> None: ...

    def close(self) -> None: ...


def _row(r: Sequence[Any]) -> OutboxRow | UnreadableRow:
    """One outbox row from `SqliteStore._SELECT`; a body that cannot be decoded never raises."""
    status = OutboxStatus(r[4])
    created_at = datetime.fromtimestamp(r[6], tz=UTC)
    try:
        event = event_from_json(r[1], r[13])
    except Exception as error:  # any stored body, however broken, is one bad row
        return UnreadableRow(
            id=r[0],
            event_id=r[10],
            event_type=r[11],
            session_id=r[12],
            rule=r[2],
            target=r[3],
            status=status,
            attempts=r[5],
            created_at=created_at,
            last_error=r[8],
            reason=f"stored event cannot be read: {describe_error(error)}",
            error=error,
        )
    return OutboxRow(
        id=r[0],
        event=event,
        rule=r[2],
        target=r[3],
        status=status,
        attempts=r[5],
        created_at=created_at,
        next_attempt_at=datetime.fromtimestamp(r[7], tz=UTC),
        last_error=r[8],
        finished_at=_dt(r[9]),
    )


def _number(db: sqlite3.Connection, events: Sequence[Event]) -> None:
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
        (sequence,) = db.execute(
            "INSERT INTO sequences(lane, last) VALUES (?, 1)"
            " ON CONFLICT(lane) DO UPDATE SET last = last + 1 RETURNING last",
            (e.session.id if e.session else "",),
        ).fetchone()
        db.execute("UPDATE events SET sequence=? WHERE id=?", (sequence, e.id))


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
            self._add_sequences()
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

    def _add_sequences(self) -> None:
        """Give a database from before webhook events v1 its per-session sequences.

        Events already routed or held are numbered in the order their first
        outbox rows were queued (held ones first), so rows still queued from an
        older build go out with a sequence, in the order they will be sent.
        """
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
        if "sequence" in columns:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE events ADD COLUMN sequence INTEGER")
            self._db.execute(
                "UPDATE events SET sequence = (SELECT n FROM (SELECT id, ROW_NUMBER() OVER"
                " (PARTITION BY COALESCE(session_id, '') ORDER BY (SELECT MIN(o.id) FROM outbox o"
                " WHERE o.event_id = events.id), rowid) AS n"
                " FROM events WHERE id IN (SELECT event_id FROM outbox"
                " UNION SELECT event_id FROM held)) AS numbered"
                " WHERE numbered.id = events.id)"
            )
            self._db.execute(
                "INSERT INTO sequences(lane, last) SELECT COALESCE(session_id, ''), MAX(sequence)"
                " FROM events WHERE sequence IS NOT NULL GROUP BY COALESCE(session_id, '')"
                " ON CONFLICT(lane) DO UPDATE SET last = MAX(last, excluded.last)"
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
        _number(db, [e for e, _ in routes])
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
            db.execute(
                "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, ?)"
                " ON CONFLICT(session_id) DO UPDATE SET state=excluded.state,"
                " stored_at=excluded.stored_at",
                (session_id, state_to_json(state), _ts(now)),
            )
            new = self._insert_events(db, events, routes, now)
            if evaluation is not None:
                self._write_evaluation(db, session_id, evaluation, now)
            return new

    def _write_evaluation(
        self, db: sqlite3.Connection, session_id: str, evaluation: Evaluation, now: datetime
    ) -> None:
        db.execute(
            "INSERT INTO rule_memory(session_id, memory, wake_at) VALUES (?, ?, ?)"
            " ON CONFLICT(session_id) DO UPDATE SET memory=excluded.memory,"
            " wake_at=excluded.wake_at",
            (
                session_id,
                memory_to_json(evaluation.memory),
                None if evaluation.wake_at is None else _ts(evaluation.wake_at),
            ),
        )
        stamp = _ts(now)
        _number(db, [h.event for h in evaluation.held])
        db.executemany(
            "INSERT OR IGNORE INTO held(target, quiet_window, release_at, event_id, rule,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (h.target, h.window, _ts(h.release_at), h.event.id, h.rule, stamp)
                for h in evaluation.held
            ],
        )
        if not evaluation.decisions:
            return
        db.executemany(
            "INSERT INTO decisions(session_id, rule, event_id, event_type, outcome, reason, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    session_id,
                    d.rule,
                    d.event.id,
                    str(d.event.type),
                    str(d.outcome),
                    d.reason,
                    stamp,
                )
                for d in evaluation.decisions
            ],
        )
        db.execute(
            "DELETE FROM decisions WHERE session_id=? AND id <= (SELECT id FROM decisions"
            " WHERE session_id=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (session_id, session_id, DECISIONS_KEPT_PER_SESSION),
        )

    def load_memory(self, session_id: str) -> SessionMemory:
        """What rule evaluation remembers about a session (empty if nothing yet)."""
        from watcher.core.rulestate import SessionMemory

        with self._lock:
            row = self._db.execute(
                "SELECT memory FROM rule_memory WHERE session_id=?", (session_id,)
            ).fetchone()
        if row is None:
            return SessionMemory()
        try:
            return memory_from_json(row[0])
        except (ValueError, KeyError, TypeError):
            # One unreadable row must not stop this session's polls: its rules start afresh.
            log.warning("rule memory of %s is unreadable; starting it afresh", session_id)
            return SessionMemory()

    def record_evaluation(self, session_id: str, evaluation: Evaluation, now: datetime) -> int:
        """Store a timer evaluation (no new snapshot): memory, events, outbox rows, held."""
        with self._transaction() as db:
            new = self._insert_events(db, evaluation.events, evaluation.routes, now)
            self._write_evaluation(db, session_id, evaluation, now)
            return new

    def due_sessions(self, now: datetime) -> list[str]:
        """Sessions whose rules asked to be woken at or before `now`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT session_id FROM rule_memory WHERE wake_at <= ? ORDER BY wake_at",
                (_ts(now),),
            ).fetchall()
        return [r[0] for r in rows]

    def due_held(self, now: datetime) -> list[HeldRow]:
        """Held notifications whose quiet-hours window has ended, in the order they were held.

        A held row whose stored event cannot be read back cannot be listed in a
        digest: it becomes a dead letter of its target with the reason, so it
        stays visible in `outbox list` and the timer does not trip on it again.
        """
        from watcher.core.rulestate import Held

        with self._lock:
            rows = self._db.execute(
                "SELECT h.id, h.target, h.quiet_window, h.release_at, e.body, h.rule, e.sequence,"
                " h.event_id FROM held h JOIN events e ON e.id = h.event_id"
                " WHERE h.release_at <= ? ORDER BY h.id",
                (_ts(now),),
            ).fetchall()
        due: list[HeldRow] = []
        unreadable: list[tuple[int, str, str, str, str]] = []
        for r in rows:
            try:
                event = event_from_json(r[4], r[6])
            except Exception as error:  # any stored body, however broken, is one bad row
                reason = f"stored event cannot be read: {describe_error(error)}"
                unreadable.append((r[0], r[7], r[1], r[5], reason))
                continue
            due.append(HeldRow(r[0], Held(r[1], r[2], _utc(r[3]), event, r[5])))
        if unreadable:
            self._bury_held(unreadable, now)
        return due

    def _bury_held(self, rows: Sequence[tuple[int, str, str, str, str]], now: datetime) -> None:
        stamp = _ts(now)
        with self._transaction() as db:
            for held_id, event_id, target, rule, reason in rows:
                log.error(
                    "held notification %s -> %s is a dead letter: %s", event_id, target, reason
                )
                db.execute(
                    "INSERT OR IGNORE INTO outbox(event_id, target, rule, lane, status, attempts,"
                    " created_at, next_attempt_at, last_error, finished_at)"
                    " VALUES (?, ?, ?, '', 'dead', 0, ?, ?, ?, ?)",
                    (event_id, target, rule, stamp, stamp, reason, stamp),
                )
                db.execute("DELETE FROM held WHERE id=?", (held_id,))

    def release_digests(
        self, digests: Sequence[tuple[Event, Route]], held_ids: Sequence[int], now: datetime
    ) -> int:
        """Queue digests and forget the held rows they list, in one transaction."""
        with self._transaction() as db:
            new = self._insert_events(db, [e for e, _ in digests], digests, now)
            db.executemany("DELETE FROM held WHERE id=?", [(i,) for i in held_ids])
            return new

    def next_wake(self) -> datetime | None:
        """The earliest time a rule asked to be woken or a held digest is due, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM rule_memory"
                " UNION ALL SELECT MIN(release_at) FROM held)"
            ).fetchone()
        return _dt(row[0])

    def held_count(self) -> int:
        """How many notifications wait for a digest."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM held").fetchone()[0])

    def add_mute(self, mute: Mute, now: datetime) -> int:
        """Store a mute; returns its id."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO mutes(kind, value, until, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    str(mute.kind),
                    mute.value,
                    None if mute.until is None else _ts(mute.until),
                    mute.reason,
                    _ts(now),
                ),
            )
            return int(cursor.lastrowid or 0)

    def remove_mutes(self, kind: MuteKind, value: str) -> int:
        """Delete the mutes of `kind` on `value`; returns how many there were."""
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM mutes WHERE kind=? AND value=?", (str(kind), value)
            ).rowcount

    def active_mutes(self, now: datetime) -> list[Mute]:
        """Mutes in force at `now`, oldest first."""
        from watcher.core.rulestate import Mute, MuteKind

        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, value, until, reason FROM mutes"
                " WHERE until IS NULL OR until > ? ORDER BY id",
                (_ts(now),),
            ).fetchall()
        return [Mute(MuteKind(r[1]), r[2], _dt(r[3]), r[4], r[0]) for r in rows]

    def recent_events(self, session_id: str, limit: int = 20) -> list[Event]:
        """The latest stored events of a session, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body, sequence FROM events WHERE session_id=?"
                " ORDER BY recorded_at DESC, rowid DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
        return [event_from_json(r[0], r[1]) for r in reversed(rows)]

    def recent_decisions(self, session_id: str, limit: int = 50) -> list[DecisionRow]:
        """The latest rule decisions about a session, oldest first."""
        from watcher.core.rulestate import Outcome

        with self._lock:
            rows = self._db.execute(
                "SELECT at, rule, event_id, event_type, outcome, reason FROM decisions"
                " WHERE session_id=? ORDER BY id DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
        return [
            DecisionRow(_utc(r[0]), r[1], r[2], r[3], Outcome(r[4]), r[5]) for r in reversed(rows)
        ]

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int:
        """Store events that belong to no session state (the watcher's own)."""
        with self._transaction() as db:
            return self._insert_events(db, events, routes, now)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[OutboxRow | UnreadableRow]:
        with self._lock:
            raw = self._db.execute(sql, params).fetchall()
        return [_row(r) for r in raw]

    _SELECT = (
        "SELECT o.id, e.body, o.rule, o.target, o.status, o.attempts, o.created_at,"
        " o.next_attempt_at, o.last_error, o.finished_at, e.id, e.type, e.session_id,"
        " e.sequence"
        " FROM outbox o JOIN events e ON e.id = o.event_id"
    )

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]:
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

    # --- live cards: one Slack message per (target, session) -------------------------

    def pending_lane(
        self, target: str, session_id: str, limit: int
    ) -> list[OutboxRow | UnreadableRow]:
        """Every pending row of one session for `target`, oldest first (a card's backlog)."""
        sql = self._SELECT + (
            " WHERE o.target=? AND o.lane=? AND o.status='pending' ORDER BY o.id LIMIT ?"
        )
        return self._rows(sql, (target, session_id, limit))

    def card(self, target: str, session_id: str) -> Card | None:
        """The card of `session_id` for `target`, if one was ever posted or intended."""
        with self._lock:
            row = self._db.execute(
                "SELECT channel, ts, marker, posting_since, replaced_ts, replaced_reason,"
                " replaced_url FROM cards WHERE target=? AND session_id=?",
                (target, session_id),
            ).fetchone()
        if row is None:
            return None
        return Card(target, session_id, row[0], row[1], row[2], _dt(row[3]), row[4], row[5], row[6])

    def intend_card(self, card: Card, now: datetime) -> None:
        """Note, before posting it, that a new card with `card.marker` is about to be posted.

        Committed before the post, so a crash after Slack accepted it leaves a
        trace to look the card up by, instead of posting a second one.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT INTO cards(target, session_id, channel, ts, marker, posting_since,"
                " replaced_ts, replaced_reason, replaced_url, updated_at)"
                " VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(target, session_id) DO UPDATE SET channel=excluded.channel,"
                " ts=NULL, marker=excluded.marker, posting_since=excluded.posting_since,"
                " replaced_ts=excluded.replaced_ts, replaced_reason=excluded.replaced_reason,"
                " replaced_url=excluded.replaced_url, updated_at=excluded.updated_at",
                (
                    card.target,
                    card.session_id,
                    card.channel,
                    card.marker,
                    _ts(card.posting_since or now),
                    card.replaced_ts,
                    card.replaced_reason,
                    card.replaced_url,
                    _ts(now),
                ),
            )

    def drop_card_intent(self, target: str, session_id: str, now: datetime) -> None:
        """Slack refused the post outright: nothing can have been posted, nothing to look up."""
        with self._transaction() as db:
            db.execute(
                "UPDATE cards SET posting_since=NULL, updated_at=? WHERE target=? AND"
                " session_id=? AND ts IS NULL",
                (_ts(now), target, session_id),
            )

    def record_card(
        self, target: str, session_id: str, ts: str, delivered: Sequence[int], now: datetime
    ) -> None:
        """Store the card's `ts` and mark the outbox rows `delivered`, in one transaction.

        The card row exists (`intend_card` wrote it before the post); from now on
        every notification of the session updates message `ts`.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE cards SET ts=?, posting_since=NULL, updated_at=?"
                " WHERE target=? AND session_id=?",
                (ts, _ts(now), target, session_id),
            )
            db.executemany(
                "UPDATE outbox SET status='delivered', attempts=attempts+1, finished_at=?,"
                " handle=?, last_error=NULL WHERE id=? AND status='pending'",
                [(_ts(now), ts, row_id) for row_id in delivered],
            )

    def list_outbox(
        self, status: OutboxStatus | None = None, limit: int = 1000
    ) -> list[OutboxRow | UnreadableRow]:
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

    # --- housekeeping: what `status` and the metrics read ------------------------------

    def record_housekeeping(self, polls: Sequence[PollMark], meta: Mapping[str, str]) -> None:
        """Store the latest poll of each session in `polls` and the daemon's `meta` values.

        One transaction for the whole batch: the daemon calls this every few
        seconds instead of writing once per poll, and its success is also the
        proof that the store is writable.
        """
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO polls(session_id, polled_at, outcome, next_poll_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET"
                " polled_at=excluded.polled_at, outcome=excluded.outcome,"
                " next_poll_at=excluded.next_poll_at",
                [
                    (
                        p.session_id,
                        _ts(p.polled_at),
                        p.outcome,
                        None if p.next_poll_at is None else _ts(p.next_poll_at),
                    )
                    for p in polls
                ],
            )
            db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                sorted(meta.items()),
            )

    def session_statuses(self) -> dict[str, tuple[str | None, bool]]:
        """Every stored session: (last known status, gone?)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT session_id, json_extract(state, '$.gone'),"
                " coalesce(json_extract(state, '$.snapshot.status'),"
                " json_extract(state, '$.last.status')) FROM sessions"
            ).fetchall()
        return {sid: (status, bool(gone)) for sid, gone, status in rows}

    def outbox_figures(self, targets: Sequence[str]) -> OutboxFigures:
        """Pending and dead rows of each target and the oldest pending row (index scans only)."""
        pending: dict[str, int] = {}
        dead: dict[str, int] = {}
        oldest: float | None = None
        with self._lock:
            for target in targets:
                count, first = self._db.execute(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox"
                    " WHERE target=? AND status='pending'",
                    (target,),
                ).fetchone()
                pending[target] = count
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
                dead[target] = self._db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE target=? AND status='dead'", (target,)
                ).fetchone()[0]
        return OutboxFigures(pending, dead, _dt(oldest))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
