"""The SQLite store: one file in WAL mode, its tables' queries composed into `SqliteStore`.

`base` holds the connection, the migration at open, the lock and the
transaction; each other module one concern's tables (sessions and discovery,
events and sequences, rules, outbox, cards, admin, retention, reports and their runs),
as a mixin over that base: the queries both stores share live in
`watcher.store.tables`, and these modules keep only what SQLite does its own
way. `readonly` is the read-only view `status` and `backup` use.
"""

from __future__ import annotations

from pathlib import Path

from watcher.store.sqlite.admin import AdminTables
from watcher.store.sqlite.base import MEMORY
from watcher.store.sqlite.cards import CardTables
from watcher.store.sqlite.events import EventTables
from watcher.store.sqlite.outbox import OutboxTables
from watcher.store.sqlite.readonly import SqliteReadOnlyStore
from watcher.store.sqlite.reportruns import ReportRunTables
from watcher.store.sqlite.reports import ReportTables
from watcher.store.sqlite.retention import RetentionTables
from watcher.store.sqlite.rules import RuleTables
from watcher.store.sqlite.sessions import SessionTables

__all__ = ["SqliteReadOnlyStore", "SqliteStore", "open_read_only"]


class SqliteStore(
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
    """`Store` on one SQLite file in WAL mode with `synchronous=FULL`.

    Calls are serialised by a lock so the daemon may call from worker threads.
    `":memory:"` gives a throwaway store for unit tests. The schema is brought
    to the latest version at open (`watcher.store.migrations`).

    `durable=False` gives a connection with `synchronous=NORMAL`, for the outbox
    worker's marks (delivered, retry, dead): a power cut may then forget the
    last marks, which can only make a row be sent again, what the delivery
    contract already allows for anything in flight. What a poll records
    (snapshot, events, outbox rows) always commits with `synchronous=FULL`:
    forgetting it could lose a transition.
    """

    def for_delivery(self) -> SqliteStore:
        """The outbox worker's store: its own connection on the same file, `durable=False`.

        SQLite in WAL mode lets delivery read and mark rows while polls commit,
        so a burst of sends never queues behind polls. A `:memory:` database
        exists only on its one connection: it is its own delivery store.
        """
        if self.path == MEMORY:
            return self
        return SqliteStore(self.path, durable=False, migrations=self._migrations)


def open_read_only(path: Path) -> SqliteReadOnlyStore:
    """The state database at `path`, read-only (`status`, `backup`); StoreError if unusable."""
    return SqliteReadOnlyStore(path)
