"""The PostgreSQL store: a small connection pool, its tables' queries composed into `PostgresStore`.

`base` holds the pool, the migration at open, transactions and the fence;
each other module one concern's tables (sessions and discovery, events and
sequences, rules, outbox and claims, cards, admin, retention, reports and
their runs), as a mixin
over that base, mirroring `watcher.store.sqlite`; the queries both share live in
`watcher.store.tables`. `migrations` is the schema
with the SQLite schema's step numbers; `readonly` the view `status` uses.
"""

from __future__ import annotations

from watcher.store.postgres.admin import AdminTables
from watcher.store.postgres.base import Fence, display
from watcher.store.postgres.cards import CardTables
from watcher.store.postgres.events import EventTables
from watcher.store.postgres.outbox import OutboxTables
from watcher.store.postgres.readonly import PostgresReadOnlyStore, pg_dump_advice
from watcher.store.postgres.reportruns import ReportRunTables
from watcher.store.postgres.reports import ReportTables
from watcher.store.postgres.retention import RetentionTables
from watcher.store.postgres.rules import RuleTables
from watcher.store.postgres.sessions import SessionTables

__all__ = ["Fence", "PostgresReadOnlyStore", "PostgresStore", "display", "pg_dump_advice"]


class PostgresStore(
    SessionTables,
    EventTables,
    RuleTables,
    OutboxTables,
    CardTables,
    AdminTables,
    RetentionTables,
    ReportTables,
    ReportRunTables,
):
    """`Store` (and `LeaderStore`) on a PostgreSQL database, through a small connection pool.

    Safe to call from several threads at once: each call takes a pooled
    connection. Every write method is one transaction, as in the SQLite
    store; with `fenced=True` each first checks that the store's epoch holds
    the leader lease (`set_epoch`), and `due` claims the rows it hands out.
    """

    def for_delivery(self) -> PostgresStore:
        """The outbox worker's store: a pool of its own on the same database, the same fence.

        A burst of sends then never waits for a connection behind polls;
        setting the epoch on either store sets it for both.
        """
        return PostgresStore(
            self._url,
            fenced=self._fenced,
            pool_max=self._pool_max,
            connect_timeout=self._connect_timeout,
            migrations=self._migrations,
            fence=self._fence,
        )
