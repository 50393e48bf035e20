"""The state database opened read-only, for `status` and `backup` while a daemon writes.

Opened with `mode=ro` and a short busy timeout: in WAL mode a reader never
blocks the daemon's writes, and the daemon never waits for these commands.
`read_status` reads everything in one read transaction, per watched session
one row, so its cost does not grow with history; `copy_to` takes one
consistent snapshot through SQLite's backup API and checks the copy whole.
Neither migrates: an older database is read as it is. `report_history` and
`report_runs` are what `report NAME` reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from watcher.core.reporthistory import ReportHistory
from watcher.store.errors import StoreError
from watcher.store.migrations import STATUS_CHANGES
from watcher.store.rows import PollMark, StatusRows, watched_in
from watcher.store.sqlite.base import maybe_moment, moment
from watcher.store.sqlite.reports import read_report_history, read_report_runs
from watcher.store.tables.status import status_rows

BUSY_TIMEOUT = 0.2  # seconds; the daemon's write transactions are short
# What `status` shows of each watched session, from its row (columns kept on write).
_FACTS = "SELECT session_id, status, gone, changed_at, notified_at FROM sessions"
# A database no build with those columns has opened yet is read as it is: its documents,
# events and outbox (old builds only: no migration runs here). A document that is not
# JSON shows no status (as the migration leaves it) rather than failing the whole read.
_OLD_FACTS = (
    "SELECT session_id, CASE WHEN json_valid(state) THEN"  # noqa: S608
    " coalesce(json_extract(state, '$.snapshot.status'), json_extract(state, '$.last.status'))"
    " END, CASE WHEN json_valid(state) THEN json_extract(state, '$.gone') END,"
    " (SELECT MAX(occurred_at) FROM events e WHERE e.session_id = s.session_id"
    f" AND e.type IN {STATUS_CHANGES}),"
    " (SELECT MAX(finished_at) FROM outbox o WHERE o.lane = s.session_id"
    " AND o.status = 'delivered') FROM sessions s"
)


class SqliteReadOnlyStore:
    """A read-only connection to the state database at `path`.

    StoreError if there is no file there or it is not an SQLite database.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise StoreError(f"no state database at {path} (has the daemon run yet?)")
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
            self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot read state database {path}: {error}") from None

    def read_status(self, configured: Sequence[str] = ()) -> StatusRows:
        """Everything `status` shows, in one read transaction.

        Per-session facts are read for the watched sessions only (the daemon's
        watched set in meta, else `configured`), from their own rows, and the
        outbox through the partial indexes of its pending and dead rows, so
        `status` costs the same however much history the database holds.
        """
        try:
            self._db.execute("BEGIN")
            try:
                return self._status(configured)
            finally:
                self._db.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot read state database {self.path}: {error}") from None

    def _status(self, configured: Sequence[str]) -> StatusRows:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"meta", "sessions", "events", "outbox"} <= tables:
            raise StoreError(f"{self.path} is not a factory-watcher state database")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        daemons = watched_in(meta)  # the sessions `status` shows: the daemon's, else configured
        watched = list(configured) if daemons is None else [sid for sid, _ in daemons]
        ids = json.dumps(watched)
        polls: dict[str, PollMark] = {}
        if "polls" in tables:
            polls = {
                sid: PollMark(sid, moment(at), outcome, maybe_moment(nxt))
                for sid, at, outcome, nxt in db.execute(
                    "SELECT session_id, polled_at, outcome, next_poll_at FROM polls"
                    " WHERE session_id IN (SELECT value FROM json_each(?))",
                    (ids,),
                )
            }
        columns = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
        sql = _FACTS if {"changed_at", "notified_at"} <= columns else _OLD_FACTS
        rows = db.execute(
            sql + " WHERE session_id IN (SELECT value FROM json_each(?))",  # noqa: S608 (constant)
            (ids,),
        ).fetchall()
        return status_rows(
            db,
            meta,
            polls,
            rows,
            database_bytes=int(db.execute("PRAGMA page_count").fetchone()[0])
            * int(db.execute("PRAGMA page_size").fetchone()[0]),
            report_runs=read_report_runs(db),
        )

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """What a report of the window `(start, end]` reads (`report NAME`)."""
        try:
            return read_report_history(self._db, start, end)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot read state database {self.path}: {error}") from None

    def report_runs(self) -> dict[str, datetime]:
        """The scheduled time of each report's last recorded run."""
        try:
            return read_report_runs(self._db)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot read state database {self.path}: {error}") from None

    def copy_to(self, destination: Path) -> int:
        """Copy the database to `destination` in one step (one consistent snapshot); its pages.

        The copy is a standalone file (journal mode DELETE, no -wal beside it)
        and passed `PRAGMA integrity_check`; StoreError otherwise.
        """
        dst = sqlite3.connect(destination, isolation_level=None)
        try:
            try:
                self._db.backup(dst)  # all pages in one step: one consistent snapshot
            except sqlite3.Error as error:
                raise StoreError(f"backup failed: {error}") from None
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchone()
            if not check or check[0] != "ok":
                raise StoreError(f"the copy failed its integrity check: {check}")
            return int(dst.execute("PRAGMA page_count").fetchone()[0])
        finally:
            dst.close()

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
