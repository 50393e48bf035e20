"""The store backends the conformance suite runs on, and how a test damages their data.

A backend opens a `Store` on its own data (opening again reopens the same
data, as a restart would) and plays a damaged disk: it rewrites stored text
behind the store's back, the way an old build or a bad sector would leave it.
A second backend is added here and to `BACKENDS`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg

from watcher.store import ReadOnlyStore, SqliteReadOnlyStore, SqliteStore, Store
from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore


class Backend(Protocol):
    """One storage backend under test."""

    def open(self) -> Store:
        """A store on this backend's data (the same data every time)."""
        ...

    def overwrite_event_body(self, event_id: str, body: str) -> None:
        """Replace a stored event's document (an old or damaged row)."""
        ...

    def event_body(self, event_id: str) -> str:
        """A stored event's document, as stored."""
        ...

    def overwrite_memory(self, session_id: str, text: str) -> None:
        """Store `text` as a session's rule memory (a damaged row)."""
        ...

    def stored_documents(self) -> list[str]:
        """Every stored event and session-state document, as stored."""
        ...

    def count(self, table: str) -> int:
        """How many rows `table` holds (to see what pruning left behind)."""
        ...

    def overwrite_state(self, session_id: str, text: str) -> None:
        """Replace a session's stored state document (a damaged row)."""
        ...

    def set_aside_states(self) -> list[tuple[str, str, str]]:
        """(session id, state as stored, reason) of every session row set aside."""
        ...

    def overwrite_report_run(self, name: str, scheduled_at: float) -> None:
        """Store `scheduled_at` (Unix seconds, however absurd) as a report's last run."""
        ...

    def read_only(self) -> ReadOnlyStore:
        """The read-only view `status` opens on this backend's data."""
        ...


class SqliteBackend:
    """A SQLite store in a file; damage is done by a second connection on the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> Store:
        """A `SqliteStore` on the file."""
        return SqliteStore(self.path)

    def read_only(self) -> ReadOnlyStore:
        """A `SqliteReadOnlyStore` on the file."""
        return SqliteReadOnlyStore(self.path)

    def _write(self, sql: str, params: tuple[str, ...]) -> None:
        db = sqlite3.connect(self.path)
        with db:
            db.execute(sql, params)
        db.close()

    def _read(self, sql: str, params: tuple[str, ...] = ()) -> list[str]:
        db = sqlite3.connect(self.path)
        try:
            return [r[0] for r in db.execute(sql, params)]
        finally:
            db.close()

    def overwrite_event_body(self, event_id: str, body: str) -> None:
        """UPDATE the events row."""
        self._write("UPDATE events SET body=? WHERE id=?", (body, event_id))

    def event_body(self, event_id: str) -> str:
        """SELECT the events row's body."""
        (body,) = self._read("SELECT body FROM events WHERE id=?", (event_id,))
        return body

    def overwrite_memory(self, session_id: str, text: str) -> None:
        """INSERT or replace the rule_memory row."""
        self._write(
            "INSERT OR REPLACE INTO rule_memory(session_id, memory) VALUES (?, ?)",
            (session_id, text),
        )

    def stored_documents(self) -> list[str]:
        """Event bodies and session states."""
        return self._read("SELECT body FROM events UNION ALL SELECT state FROM sessions")

    def count(self, table: str) -> int:
        """SELECT COUNT(*) of the table."""
        (n,) = self._read(f"SELECT COUNT(*) FROM {table}")
        return int(n)

    def overwrite_state(self, session_id: str, text: str) -> None:
        """UPDATE the sessions row's state document."""
        self._write("UPDATE sessions SET state=? WHERE session_id=?", (text, session_id))

    def overwrite_report_run(self, name: str, scheduled_at: float) -> None:
        """UPDATE the report_runs row's time."""
        db = sqlite3.connect(self.path)
        with db:
            db.execute("UPDATE report_runs SET scheduled_at=? WHERE name=?", (scheduled_at, name))
        db.close()

    def set_aside_states(self) -> list[tuple[str, str, str]]:
        """SELECT the sessions_set_aside rows, oldest first."""
        db = sqlite3.connect(self.path)
        try:
            rows = db.execute(
                "SELECT session_id, state, reason FROM sessions_set_aside ORDER BY id"
            ).fetchall()
        finally:
            db.close()
        return [(r[0], r[1], r[2]) for r in rows]


class PostgresBackend:
    """A PostgreSQL store on a scratch database; damage is done by a second connection."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self) -> Store:
        """A `PostgresStore` on the database."""
        return PostgresStore(self.url)

    def read_only(self) -> ReadOnlyStore:
        """A `PostgresReadOnlyStore` on the database."""
        return PostgresReadOnlyStore(self.url)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with psycopg.connect(self.url) as db:
            db.execute(sql, params)

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as db:
            return db.execute(sql, params).fetchall()

    def overwrite_event_body(self, event_id: str, body: str) -> None:
        """UPDATE the events row."""
        self._write("UPDATE events SET body = %s WHERE id = %s", (body, event_id))

    def event_body(self, event_id: str) -> str:
        """SELECT the events row's body."""
        ((body,),) = self._rows("SELECT body FROM events WHERE id = %s", (event_id,))
        return str(body)

    def overwrite_memory(self, session_id: str, text: str) -> None:
        """INSERT or replace the rule_memory row."""
        self._write(
            "INSERT INTO rule_memory(session_id, memory) VALUES (%s, %s)"
            " ON CONFLICT (session_id) DO UPDATE SET memory = EXCLUDED.memory",
            (session_id, text),
        )

    def stored_documents(self) -> list[str]:
        """Event bodies and session states."""
        return [
            r[0] for r in self._rows("SELECT body FROM events UNION ALL SELECT state FROM sessions")
        ]

    def count(self, table: str) -> int:
        """SELECT COUNT(*) of the table."""
        ((n,),) = self._rows(f"SELECT COUNT(*) FROM {table}")  # type: ignore[arg-type]
        return int(n)

    def overwrite_state(self, session_id: str, text: str) -> None:
        """UPDATE the sessions row's state document."""
        self._write("UPDATE sessions SET state = %s WHERE session_id = %s", (text, session_id))

    def overwrite_report_run(self, name: str, scheduled_at: float) -> None:
        """UPDATE the report_runs row's time."""
        self._write(
            "UPDATE report_runs SET scheduled_at = %s WHERE name = %s", (scheduled_at, name)
        )

    def set_aside_states(self) -> list[tuple[str, str, str]]:
        """SELECT the sessions_set_aside rows, oldest first."""
        rows = self._rows("SELECT session_id, state, reason FROM sessions_set_aside ORDER BY id")
        return [(r[0], r[1], r[2]) for r in rows]


BACKENDS = ["sqlite", "postgres"]


@contextmanager
def make_backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    """The backend called `name`, keeping its data under `tmp_path` (or a scratch database)."""
    if name == "sqlite":
        yield SqliteBackend(tmp_path / "state" / "state.db")
    elif name == "postgres":
        from tests.postgres import scratch_database

        with scratch_database() as url:
            yield PostgresBackend(url)
    else:
        raise ValueError(f"no backend {name}")
