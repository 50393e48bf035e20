"""Which store a configuration names: SQLite at `state.path`, or PostgreSQL at `state.url`.

The daemon and the commands open their store here instead of naming a
backend. PostgreSQL's modules (and psycopg) are imported only when the
configuration names it, so a one-host SQLite command pays nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watcher.store.errors import StoreError
from watcher.store.sqlite import SqliteStore, open_read_only

if TYPE_CHECKING:
    from watcher.core.settings import Settings
    from watcher.store.protocol import LeaderStore, ReadOnlyStore, Store


def open_store(settings: Settings, *, fenced: bool = False) -> Store:
    """The configured state store, migrated; StoreError if it cannot be used.

    `fenced` (PostgreSQL only) makes every write check the leader lease first.
    """
    if settings.state_url is not None:
        return _postgres(settings.state_url.reveal(), fenced=fenced)
    if fenced:
        raise StoreError("a fenced store needs a PostgreSQL state (state.url)")
    return SqliteStore(settings.state_path)


def open_leader_store(settings: Settings) -> LeaderStore:
    """The configured PostgreSQL store, fenced (a replica's); StoreError for SQLite."""
    if settings.state_url is None:
        raise StoreError("leadership among replicas needs a PostgreSQL state (state.url)")
    return _postgres(settings.state_url.reveal(), fenced=True)


def _postgres(url: str, *, fenced: bool) -> LeaderStore:
    from watcher.store.postgres import PostgresStore  # noqa: PLC0415 (psycopg only when used)

    return PostgresStore(url, fenced=fenced)


def open_read_only_for(settings: Settings) -> ReadOnlyStore:
    """The configured state database, read-only (`status`, `backup`); StoreError if unusable."""
    if settings.state_url is not None:
        from watcher.store.postgres import PostgresReadOnlyStore  # noqa: PLC0415

        return PostgresReadOnlyStore(settings.state_url.reveal())
    return open_read_only(settings.state_path)


def state_location(settings: Settings) -> str:
    """Where the configured state lives, for messages: a path, or a URL without password."""
    if settings.state_url is not None:
        from watcher.store.postgres.base import display  # noqa: PLC0415

        return display(settings.state_url.reveal())
    return str(settings.state_path)
