"""Durable state: last session states, events, rule state and the delivery outbox.

A poll's new state, its events and their outbox rows commit in one
transaction before anything is sent, so a crash loses nothing and can at
worst resend what was in flight.

The package's public face; its parts:
- `rows`: the values the store hands out and takes in (outbox rows, cards, ...);
- `codec`: JSON for events, session states and rule memory (pure);
- `protocol`: `Store` and its role protocols, `ReadOnlyStore` for `status`/`backup`;
- `migrations`: the schema as ordered, numbered steps, applied at open;
- `sqlite`: the SQLite implementation, one module per concern;
- `postgres`: the PostgreSQL implementation (imported only when configured);
- `open`: the store a configuration names (`open_store`, `open_read_only_for`).
"""

from __future__ import annotations

# Re-exported (the `as` form is mypy's explicit re-export): the states are part of
# the store's interface; they live in core so the command line can name them cheaply.
from watcher.core.outbox import OutboxStatus as OutboxStatus
from watcher.store.codec import (
    event_from_json,
    event_to_json,
    memory_from_json,
    memory_to_json,
    state_from_json,
    state_to_json,
)
from watcher.store.errors import FencedError, SchemaTooNewError, StoreError
from watcher.store.migrations import SCHEMA_VERSION
from watcher.store.protocol import (
    AdminStore,
    CardStore,
    DeliveryStore,
    EventStore,
    IntakeStore,
    LeaderStore,
    OutboxStore,
    ReadOnlyStore,
    ReportContentStore,
    ReportReader,
    ReportRunStore,
    ReportStore,
    RetentionStore,
    RuleStore,
    SessionStore,
    Store,
)
from watcher.store.rows import (
    Card,
    DeadLetterRow,
    DecisionRow,
    Discovered,
    HeldRow,
    LeaseRow,
    OutboxFigures,
    OutboxRow,
    PollMark,
    Pruned,
    Recorded,
    StatusRows,
    StoredStates,
    TargetBacklog,
    UnreadableRow,
    UnreadableState,
    watched_in,
)
from watcher.store.sqlite import SqliteReadOnlyStore, SqliteStore, open_read_only

__all__ = [
    "SCHEMA_VERSION",
    "AdminStore",
    "Card",
    "CardStore",
    "DeadLetterRow",
    "DecisionRow",
    "DeliveryStore",
    "Discovered",
    "EventStore",
    "FencedError",
    "HeldRow",
    "IntakeStore",
    "LeaderStore",
    "LeaseRow",
    "OutboxFigures",
    "OutboxRow",
    "OutboxStatus",
    "OutboxStore",
    "PollMark",
    "Pruned",
    "ReadOnlyStore",
    "Recorded",
    "ReportContentStore",
    "ReportReader",
    "ReportRunStore",
    "ReportStore",
    "RetentionStore",
    "RuleStore",
    "SchemaTooNewError",
    "SessionStore",
    "SqliteReadOnlyStore",
    "SqliteStore",
    "StatusRows",
    "Store",
    "StoreError",
    "StoredStates",
    "TargetBacklog",
    "UnreadableRow",
    "UnreadableState",
    "event_from_json",
    "event_to_json",
    "memory_from_json",
    "memory_to_json",
    "open_read_only",
    "state_from_json",
    "state_to_json",
    "watched_in",
]
