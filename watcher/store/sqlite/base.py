"""The SQLite store's connection: pragmas, migration at open, the lock and transactions.

Every table's queries live in a mixin over this base (sessions, events,
rules, outbox, cards, admin); `watcher.store.sqlite.SqliteStore` composes
them. Times are stored as Unix seconds (REAL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from watcher.store.errors import StoreError
from watcher.store.migrations import MIGRATIONS, Migration, migrate
from watcher.store.tables.base import TableBase, maybe_moment, moment, seconds

__all__ = ["MEMORY", "SqliteBase", "maybe_moment", "moment", "seconds"]

MEMORY = ":memory:"


class SqliteBase(TableBase):
    """One SQLite connection in WAL mode, migrated at open, its calls serialised by a lock.

    `synchronous=FULL` by default; `durable=False` gives `synchronous=NORMAL`
    (see `SqliteStore`). `":memory:"` gives a throwaway database. `migrations`
    are the schema's steps (`watcher.store.migrations`; a test passes its own).
    """

    # A list travels as one JSON text, unpacked by json_each.
    _ANY_ID = "IN (SELECT value FROM json_each(?))"
    _ANY_TEXT = _ANY_ID
    _INSERTION_ORDER = "rowid"
    _MARK_RESETS = ""

    @staticmethod
    def _list(values: Iterable[Any]) -> str:
        return json.dumps(list(values))

    def __init__(
        self,
        path: Path | str,
        *,
        durable: bool = True,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self._durable = durable
        self._migrations = tuple(migrations)
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            migrate(self._db, self.path, self._migrations)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open state database {self.path}: {error}") from None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """The database file (or `:memory:`), for log lines."""
        return self.path

    @property
    def synchronous(self) -> str:
        """The connection's `PRAGMA synchronous`: FULL, or NORMAL for delivery's marks."""
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return names[int(self._read_one("PRAGMA synchronous")[0])]

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

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _read_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def integrity_ok(self) -> bool:
        """`PRAGMA integrity_check` says ok."""
        row = self._read_one("PRAGMA integrity_check")
        return bool(row and row[0] == "ok")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
