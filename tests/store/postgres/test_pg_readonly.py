"""The read-only PostgreSQL view: it never creates a schema, and `backup` points to pg_dump."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from watcher.store import StoreError
from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore

pytestmark = pytest.mark.postgres


def test_a_database_that_is_not_ours_is_refused_and_left_empty(pg_url: str) -> None:
    """No tables: a clear error naming the database; nothing is created."""
    view = PostgresReadOnlyStore(pg_url)
    try:
        with pytest.raises(StoreError, match="is not a factory-watcher state database"):
            view.read_status([])
    finally:
        view.close()
    with psycopg.connect(pg_url) as db:
        count = db.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert count == (0,)


def test_copy_to_says_to_use_pg_dump_and_writes_nothing(pg_url: str, tmp_path: Path) -> None:
    """`backup` of a PostgreSQL state: StoreError with the pg_dump way; no file appears."""
    PostgresStore(pg_url).close()
    view = PostgresReadOnlyStore(pg_url)
    try:
        with pytest.raises(StoreError, match="pg_dump") as raised:
            view.copy_to(tmp_path / "copy.db")
    finally:
        view.close()
    assert view.location in str(raised.value)
    assert list(tmp_path.iterdir()) == []
