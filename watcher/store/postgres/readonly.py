"""The PostgreSQL state database opened read-only, for `status` while a daemon writes.

One connection, no pool and no migration: `read_status` reads everything in
one `REPEATABLE READ, READ ONLY` transaction, per watched session one row.
`report_history` and `report_runs` are what `report NAME` reads, as the
daemon's store reads them. `backup` of a PostgreSQL state is pg_dump's job:
`copy_to` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import psycopg

from watcher.core.reporthistory import ReportHistory
from watcher.store.errors import StoreError
from watcher.store.postgres.base import (
    CONNECT_TIMEOUT,
    KEEPALIVES,
    display,
    maybe_moment,
    moment,
    scrub,
)
from watcher.store.postgres.leaseview import read_lease
from watcher.store.postgres.reports import fetch_report_rows, read_report_runs
from watcher.store.reportrows import decode_report_rows
from watcher.store.rows import PollMark, StatusRows, watched_in
from watcher.store.tables.status import status_rows

_TABLES = ("meta", "sessions", "events", "outbox", "polls")


class PostgresReadOnlyStore:
    """A read-only connection to the state database at `url`; StoreError if unusable."""

    def __init__(self, url: str, *, connect_timeout: int = CONNECT_TIMEOUT) -> None:
        self._url = url
        self.location = display(url)
        try:
            self._db = psycopg.connect(
                url, autocommit=True, **KEEPALIVES, connect_timeout=connect_timeout
            )
        except psycopg.Error as error:
            raise self._error(error) from None

    def _error(self, error: Exception) -> StoreError:
        text = scrub(str(error) or type(error).__name__, self._url)
        return StoreError(f"cannot read state database {self.location}: {text}")

    def read_status(self, configured: Sequence[str] = ()) -> StatusRows:
        """Everything `status` shows, in one read-only snapshot."""
        try:
            with self._db.transaction():
                self._db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return self._status(configured)
        except psycopg.Error as error:
            raise self._error(error) from None

    def _status(self, configured: Sequence[str]) -> StatusRows:
        db = self._db
        present = db.execute(
            "SELECT " + ", ".join(f"to_regclass('{t}') IS NOT NULL" for t in _TABLES)
        ).fetchone()
        if present is None or not all(present):
            raise StoreError(f"{self.location} is not a factory-watcher state database")
        meta: dict[str, str] = dict(db.execute("SELECT key, value FROM meta").fetchall())
        daemons = watched_in(meta)  # the sessions `status` shows: the daemon's, else configured
        watched = list(configured) if daemons is None else [sid for sid, _ in daemons]
        polls = {
            sid: PollMark(sid, moment(at), outcome, maybe_moment(nxt))
            for sid, at, outcome, nxt in db.execute(
                "SELECT session_id, polled_at, outcome, next_poll_at FROM polls"
                " WHERE session_id = ANY(%s::text[])",
                (watched,),
            ).fetchall()
        }
        rows = db.execute(
            "SELECT session_id, status, gone, changed_at, notified_at FROM sessions"
            " WHERE session_id = ANY(%s::text[])",
            (watched,),
        ).fetchall()
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()
        return status_rows(
            db,
            meta,
            polls,
            rows,
            database_bytes=None if size is None else int(size[0]),
            report_runs=read_report_runs(db),
            lease=read_lease(db),
        )

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """What a report of the window `(start, end]` reads (`report NAME`)."""
        try:
            rows = fetch_report_rows(self._db, start, end)
        except psycopg.Error as error:
            raise self._error(error) from None
        return decode_report_rows(rows)

    def report_runs(self) -> dict[str, datetime]:
        """The scheduled time of each report's last recorded run."""
        try:
            return read_report_runs(self._db)
        except psycopg.Error as error:
            raise self._error(error) from None

    def copy_to(self, destination: Path) -> int:
        """Refused: a PostgreSQL state is backed up with pg_dump (StoreError says how)."""
        raise StoreError(pg_dump_advice(self.location))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def pg_dump_advice(location: str) -> str:
    """What `backup` says for a PostgreSQL state: use pg_dump, with the database named."""
    return (
        f"the state database is PostgreSQL ({location}): `backup` copies SQLite files only;"
        f" back it up with pg_dump, e.g. `pg_dump --format=custom --file=BACKUP '{location}'`"
        " (the password from PGPASSWORD or ~/.pgpass)"
    )
