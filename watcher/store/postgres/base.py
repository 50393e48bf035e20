"""The PostgreSQL store's connections: the pool, migration at open, transactions and fencing.

Every table's queries live in a mixin over this base (sessions, events,
rules, outbox, cards, admin, retention); `watcher.store.postgres.PostgresStore`
composes them. Times are stored as Unix seconds (DOUBLE PRECISION), as the
SQLite store keeps them; the lease alone uses TIMESTAMPTZ, on the database's
clock. Every psycopg error becomes `StoreError` naming the database without
its password.

Fencing: a store opened `fenced=True` checks, first thing in each write
transaction, that its epoch still holds the lease (`FOR SHARE`, so a
takeover's acquire waits for the transaction to end); a stale epoch raises
`FencedError` and is counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Self
from urllib.parse import quote

import psycopg
from psycopg.abc import Params, Query
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from watcher.store.errors import FencedError, StoreError
from watcher.store.postgres.migrations import MIGRATIONS, PgMigration, migrate
from watcher.store.tables.base import TableBase, maybe_moment, moment, seconds

__all__ = [
    "Fence",
    "PostgresBase",
    "QmarkCursor",
    "display",
    "maybe_moment",
    "moment",
    "scrub",
    "seconds",
]

CONNECT_TIMEOUT = 5  # seconds; libpq's connect_timeout
POOL_MAX = 4  # the daemon's worker threads share a few connections
# A dead peer is noticed in seconds, not after the kernel's two hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}
_FENCE = (
    "SELECT 1 FROM leader_lease WHERE name = 'leader' AND epoch = %s"
    " AND expires_at > now() FOR SHARE"
)


@lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


class QmarkCursor(psycopg.Cursor[Any]):
    """A cursor that also takes the shared tables' `?` placeholders (as `%s`).

    Each statement text is translated once (cached); SQL already written with
    `%s` has no `?` and passes through unchanged.
    """

    def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        """`psycopg.Cursor.execute`, `?` placeholders taken as `%s`."""
        if isinstance(query, str):
            query = _pyformat(query)
        # The overloads split templates (which take no params) from the rest; passed on as given.
        return super().execute(query, params, prepare=prepare, binary=binary)  # type: ignore[arg-type,misc]

    def executemany(  # type: ignore[override]  # returns itself where psycopg's gives None
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> Self:
        """`psycopg.Cursor.executemany`, `?` placeholders taken as `%s`; the cursor itself.

        Returned, as sqlite3's `executemany` returns its cursor, so the shared
        tables read `rowcount` the same way on both backends.
        """
        if isinstance(query, str):
            query = _pyformat(query)
        super().executemany(query, params_seq, returning=returning)
        return self


def display(url: str) -> str:
    """The database as log lines and errors name it: `postgresql://user@host:port/db`.

    Built from the parsed parameters, so no password (in the URL or its
    query) can appear; a URL that cannot be parsed is named by its scheme only.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable URL)"
    user = params.get("user")
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    db = params.get("dbname") or user or ""
    return f"postgresql://{f'{user}@' if user else ''}{host}:{port}/{db}"


def scrub(message: str, url: str) -> str:
    """`message` with the URL's password removed, however the driver quoted it."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    text = " ".join(message.split()).replace(url, display(url))
    if password:
        for form in sorted({str(password), quote(str(password), safe="")}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text


class Fence:
    """The epoch a fenced store writes under, and how many writes it refused.

    Shared by a store and its delivery store: setting the epoch sets it for both.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.refused = 0
        self.lock = threading.Lock()

    def refuse(self) -> FencedError:
        """Count a refused write; the error to raise."""
        with self.lock:
            self.refused += 1
            epoch = self.epoch
        return FencedError(epoch)


# A session that stops inside a transaction (a replica paused by SIGSTOP, hung, or
# cut off half-way) keeps the fence's share lock on the lease row, and no standby
# can take the lease over until it is gone: the server ends such a session.
IDLE_IN_TRANSACTION = "5s"


def _end_stuck_transactions(db: psycopg.Connection[Any]) -> None:
    """Pool `configure`: the server ends this session if it idles inside a transaction."""
    db.autocommit = True
    db.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'")
    db.autocommit = False


class PostgresBase(TableBase):
    """A small pool of connections to one database, migrated at open.

    `url` is a libpq URL (with its password, if any); `fenced` makes every
    write check the lease first (see the module); `migrations` are the
    schema's steps (a test passes its own).
    """

    _ANY_ID = "= ANY(?::bigint[])"
    _ANY_TEXT = "= ANY(?::text[])"
    # A mark ends the row's claim (see `watcher.store.postgres.outbox`).
    _INSERTION_ORDER = "pos"
    _MARK_RESETS = ", claimed_epoch = NULL"

    @staticmethod
    def _list(values: Iterable[Any]) -> list[Any]:
        return list(values)

    def __init__(
        self,
        url: str,
        *,
        fenced: bool = False,
        pool_max: int = POOL_MAX,
        connect_timeout: int = CONNECT_TIMEOUT,
        migrations: Sequence[PgMigration] = MIGRATIONS,
        fence: Fence | None = None,
    ) -> None:
        self._url = url
        self._display = display(url)
        self._fenced = fenced
        self._fence = fence or Fence()
        self._pool_max = pool_max
        self._connect_timeout = connect_timeout
        self._migrations = tuple(migrations)
        self._kwargs: dict[str, Any] = {**KEEPALIVES, "connect_timeout": connect_timeout}
        try:
            with psycopg.connect(url, autocommit=True, **self._kwargs) as db:
                migrate(db, self._display, self._migrations)
        except psycopg.Error as error:
            raise self._error("cannot open", error) from None
        self._pool: ConnectionPool = ConnectionPool(
            url,
            kwargs={**self._kwargs, "cursor_factory": QmarkCursor},
            min_size=1,
            max_size=pool_max,
            open=True,
            timeout=connect_timeout * 2,
            check=ConnectionPool.check_connection,
            configure=_end_stuck_transactions,
            name="factory-watcher-store",
        )

    def _error(self, doing: str, error: Exception) -> StoreError:
        text = scrub(str(error) or type(error).__name__, self._url)
        return StoreError(f"{doing} state database {self._display}: {text}")

    @property
    def location(self) -> str:
        """The database as `postgresql://user@host:port/db` (never the password)."""
        return self._display

    @property
    def fenced_writes(self) -> int:
        """How many write transactions the fence refused (shared with the delivery store)."""
        return self._fence.refused

    def set_epoch(self, epoch: int | None) -> None:
        """Write under `epoch` from now on (None: every fenced write is refused)."""
        with self._fence.lock:
            self._fence.epoch = epoch

    @contextmanager
    def _connection(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        # The pool commits on a clean exit and rolls back on an exception. Its
        # own errors (PoolTimeout, PoolClosed) are psycopg errors too.
        try:
            with self._pool.connection() as db:
                yield db
        except psycopg.Error as error:
            raise self._error(doing, error) from None

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[Any]]:
        """One write transaction; in a fenced store, only while our epoch holds the lease."""
        with self._connection("cannot write to") as db, db.cursor() as cursor:
            if self._fenced:
                epoch = self._fence.epoch
                if epoch is None or cursor.execute(_FENCE, (epoch,)).fetchone() is None:
                    raise self._fence.refuse()
            yield cursor

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connection("cannot read") as db:
            yield db

    def _read_all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._connection("cannot read") as db:
            return db.execute(sql, params).fetchall()

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._connection("cannot read") as db:
            return db.execute(sql, params).fetchone()

    def integrity_ok(self) -> bool:
        """The database answers and holds the schema version this code wrote."""
        try:
            row = self._read_one("SELECT value FROM meta WHERE key = 'schema_version'")
        except StoreError:
            return False
        latest = self._migrations[-1].number if self._migrations else 0
        return row is not None and int(row[0]) == latest

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()
