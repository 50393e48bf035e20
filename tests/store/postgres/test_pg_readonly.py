"""The read-only PostgreSQL view: it never creates a schema or migrates, report reads fail
cleanly, and `backup` points to pg_dump."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from tests.core.factories import T0
from watcher.store import StoreError
from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore
from watcher.store.postgres.migrations import MIGRATIONS

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


def test_a_database_from_before_reports_shows_no_report_runs_and_is_not_migrated(
    pg_url: str,
) -> None:
    """A version-8 database (no report_runs) reads as no runs; the view adds no table."""
    PostgresStore(pg_url, migrations=[m for m in MIGRATIONS if m.number < 9]).close()
    view = PostgresReadOnlyStore(pg_url)
    try:
        assert view.read_status([]).report_runs == {}
        assert view.report_runs() == {}
    finally:
        view.close()
    with psycopg.connect(pg_url) as db:
        found = db.execute("SELECT to_regclass('report_runs') IS NOT NULL").fetchone()
    assert found == (False,)


def test_a_report_read_of_an_unreachable_database_is_a_store_error(pg_url: str) -> None:
    """The connection gone mid-life: report reads raise StoreError naming the database."""
    PostgresStore(pg_url).close()
    view = PostgresReadOnlyStore(pg_url)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreError, match="cannot read state database") as raised:
            view.report_history(T0, T0 + timedelta(days=1))
        assert view.location in str(raised.value)
        with pytest.raises(StoreError, match="cannot read state database"):
            view.report_runs()
    finally:
        view.close()
