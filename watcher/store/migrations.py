"""The SQLite schema as an ordered list of numbered steps, and the forward migration.

Step 1 is the schema of the first release; each later step is one change
made since, in the order it landed. `meta.schema_version` says exactly which
steps ran. A fresh database runs them all; an older one runs those after its
version; a newer one is refused (`SchemaTooNewError`) and left untouched.

Release 0.1 wrote version 1 although it already held the tables and the
column of steps 2 to 6 (they were added without a bump), so every step after
1 first looks at what is there: tables and indexes are created only if
missing, a column is added only if missing. All steps a database needs run
in one `BEGIN IMMEDIATE` transaction (SQLite DDL is transactional): a step
that fails leaves the database exactly as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from watcher.store.errors import SchemaTooNewError


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered change to the schema; `apply` runs inside the migration's transaction."""

    number: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def _run(db: sqlite3.Connection, script: str) -> None:
    # One statement at a time: `executescript` would commit the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def _first_release(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
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
""",
    )


def _polls(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS polls (
    session_id TEXT PRIMARY KEY,
    polled_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    next_poll_at REAL
);
""",
    )


def _rule_state(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
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
""",
    )


def _discovered(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS discovered (
    session_id TEXT PRIMARY KEY,
    discovered_at REAL NOT NULL
);
""",
    )


def _sequences(db: sqlite3.Connection) -> None:
    """Per-session sequences (webhook events v1), numbering the events already stored.

    Events already routed or held are numbered in the order their first
    outbox rows were queued (held ones first), so rows still queued from an
    older build go out with a sequence, in the order they will be sent.
    """
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS sequences (
    lane TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
""",
    )
    if "sequence" in _columns(db, "events"):
        return
    db.execute("ALTER TABLE events ADD COLUMN sequence INTEGER")
    db.execute(
        "UPDATE events SET sequence = (SELECT n FROM (SELECT id, ROW_NUMBER() OVER"
        " (PARTITION BY COALESCE(session_id, '') ORDER BY (SELECT MIN(o.id) FROM outbox o"
        " WHERE o.event_id = events.id), rowid) AS n"
        " FROM events WHERE id IN (SELECT event_id FROM outbox"
        " UNION SELECT event_id FROM held)) AS numbered"
        " WHERE numbered.id = events.id)"
    )
    db.execute(
        "INSERT INTO sequences(lane, last) SELECT COALESCE(session_id, ''), MAX(sequence)"
        " FROM events WHERE sequence IS NOT NULL GROUP BY COALESCE(session_id, '')"
        " ON CONFLICT(lane) DO UPDATE SET last = MAX(last, excluded.last)"
    )


def _cards(db: sqlite3.Connection) -> None:
    """Live Slack cards; a cards table from before replaced cards were linked gains the link."""
    _run(
        db,
        """
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
""",
    )
    if "replaced_url" not in _columns(db, "cards"):
        db.execute("ALTER TABLE cards ADD COLUMN replaced_url TEXT")


def _retention(db: sqlite3.Connection) -> None:
    """Retention: when a session left the watch set, and indexes for the cutoff queries.

    `sessions.unwatched_since` is NULL while a session is watched. The indexes
    let each pruning batch find its rows without scanning a table: finished
    outbox rows by status and time, events by time and by session, cards by
    session.
    """
    if "unwatched_since" not in _columns(db, "sessions"):
        db.execute("ALTER TABLE sessions ADD COLUMN unwatched_since REAL")
    _run(
        db,
        """
CREATE INDEX IF NOT EXISTS sessions_unwatched ON sessions (unwatched_since);
CREATE INDEX IF NOT EXISTS outbox_finished ON outbox (status, finished_at);
CREATE INDEX IF NOT EXISTS events_recorded ON events (recorded_at);
CREATE INDEX IF NOT EXISTS events_session ON events (session_id);
CREATE INDEX IF NOT EXISTS cards_session ON cards (session_id);
""",
    )


# The event types that change what `status` shows as a session's status "since".
STATUS_CHANGES = "('session.discovered', 'session.status_changed', 'session.deleted')"


def _flat_costs(db: sqlite3.Connection) -> None:
    """What housekeeping, `status` and start-up read, answered without scanning history.

    Each session row gains what `status` shows of it: its last status and
    whether it is gone (written with the state), the time of its last status
    change and of its last delivered notification (kept by triggers in the
    transaction that stores the event or marks the row delivered, whichever
    code path does it). Existing rows are filled in from their documents (a
    damaged document leaves them NULL) and from the events and outbox, in
    one pass each. Partial indexes answer each target's pending and dead rows
    from those rows only. Rows whose state cannot be read are moved to
    `sessions_set_aside` at start.
    """
    columns = _columns(db, "sessions")
    for name, kind in (
        ("status", "TEXT"),
        ("gone", "INTEGER NOT NULL DEFAULT 0"),
        ("changed_at", "REAL"),
        ("notified_at", "REAL"),
    ):
        if name not in columns:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
    db.execute(
        "UPDATE sessions SET gone = coalesce(json_extract(state, '$.gone'), 0),"
        " status = coalesce(json_extract(state, '$.snapshot.status'),"
        " json_extract(state, '$.last.status')) WHERE json_valid(state)"
    )
    db.execute(
        "UPDATE sessions SET changed_at = latest.at FROM (SELECT session_id,"  # noqa: S608
        f" MAX(occurred_at) AS at FROM events WHERE type IN {STATUS_CHANGES}"
        " GROUP BY session_id) AS latest WHERE latest.session_id = sessions.session_id"
    )
    db.execute(
        "UPDATE sessions SET notified_at = latest.at FROM (SELECT lane, MAX(finished_at) AS at"
        " FROM outbox WHERE status = 'delivered' GROUP BY lane) AS latest"
        " WHERE latest.lane = sessions.session_id"
    )
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS sessions_set_aside (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    state TEXT,
    reason TEXT NOT NULL,
    set_aside_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (target, attempts, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (target, id) WHERE status = 'dead';
""",
    )
    # One statement each (`_run` splits on semicolons; a trigger's body has them).
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS sessions_changed_at AFTER INSERT ON events"  # noqa: S608
        f" WHEN new.type IN {STATUS_CHANGES} BEGIN"
        " UPDATE sessions SET changed_at = max(coalesce(changed_at, new.occurred_at),"
        " new.occurred_at) WHERE session_id = new.session_id; END"
    )
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS sessions_notified_at AFTER UPDATE OF status ON outbox"
        " WHEN new.status = 'delivered' AND new.finished_at IS NOT NULL BEGIN"
        " UPDATE sessions SET notified_at = max(coalesce(notified_at, new.finished_at),"
        " new.finished_at) WHERE session_id = new.lane; END"
    )


def _report_runs(db: sqlite3.Connection) -> None:
    """Scheduled reports: the last scheduled time each report ran for.

    `record_report` writes a report's row in the transaction that stores its
    event and outbox rows, so a run is recorded exactly when it is queued.
    """
    _run(
        db,
        """
CREATE TABLE IF NOT EXISTS report_runs (
    name TEXT PRIMARY KEY,
    scheduled_at REAL NOT NULL,
    recorded_at REAL NOT NULL
);
""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "first release: meta, sessions, events, outbox", _first_release),
    Migration(2, "poll marks for `status` (polls)", _polls),
    Migration(3, "rule state: rule_memory, held, mutes, decisions", _rule_state),
    Migration(4, "sessions found by discovery (discovered)", _discovered),
    Migration(5, "per-session sequences: sequences, events.sequence", _sequences),
    Migration(6, "live Slack cards (cards)", _cards),
    Migration(7, "retention: sessions.unwatched_since, cutoff indexes", _retention),
    Migration(8, "flat costs: session facts, sessions_set_aside, outbox indexes", _flat_costs),
    Migration(9, "scheduled reports: the last run of each (report_runs)", _report_runs),
)
SCHEMA_VERSION = MIGRATIONS[-1].number


def stored_version(db: sqlite3.Connection) -> int:
    """The schema version the database says it has (0: a fresh or empty database)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 0


def _version_below(db: sqlite3.Connection, location: str, latest: int) -> int | None:
    """The stored version when it is below `latest`; None when it is `latest`.

    SchemaTooNewError when it is above: nothing has been written then.
    """
    found = stored_version(db)
    if found > latest:
        raise SchemaTooNewError(location, found, latest)
    return None if found == latest else found


def migrate(db: sqlite3.Connection, location: str, steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database on `db` (autocommit mode) to the last of `steps`; its version.

    Nothing is written when the database is already there, so opening a
    current database never waits for the write lock.
    """
    latest = steps[-1].number if steps else 0
    if _version_below(db, location, latest) is None:
        return latest
    db.execute("BEGIN IMMEDIATE")
    try:
        # Again inside the transaction: another process may have migrated meanwhile.
        found = _version_below(db, location, latest)
        for step in steps:
            if found is not None and step.number > found:
                step.apply(db)
        db.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(latest),),
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return latest
