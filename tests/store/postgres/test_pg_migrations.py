"""PostgreSQL schema migrations: a fresh database runs every step, a newer one is refused,
replicas starting at once both open, a failing step leaves nothing behind."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.core.factories import T0, event, ref
from watcher.core.rules import Route
from watcher.store import SCHEMA_VERSION, OutboxStatus, SchemaTooNewError, StoreError
from watcher.store.migrations import MIGRATIONS as SQLITE_MIGRATIONS
from watcher.store.postgres import PostgresStore
from watcher.store.postgres.migrations import MIGRATIONS, PgMigration

pytestmark = pytest.mark.postgres

TABLES = {
    "cards",
    "decisions",
    "discovered",
    "events",
    "held",
    "leader_lease",
    "meta",
    "mutes",
    "outbox",
    "polls",
    "report_runs",
    "rule_memory",
    "sequences",
    "sessions",
    "sessions_set_aside",
}


def tables(url: str) -> set[str]:
    """The tables in the database's public schema."""
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def meta(url: str) -> dict[str, str]:
    """The meta table, read without the store."""
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def test_the_steps_have_the_sqlite_schemas_numbers_and_meanings() -> None:
    """Step n means the same change on both backends, so schema_version means the same."""
    assert [(m.number, m.summary.split(":")[0]) for m in MIGRATIONS] == [
        (m.number, m.summary.split(":")[0]) for m in SQLITE_MIGRATIONS
    ]
    assert MIGRATIONS[-1].number == SCHEMA_VERSION


def test_a_fresh_database_runs_every_step(pg_url: str) -> None:
    """All tables (the lease's too) and the latest version after the first open."""
    store = PostgresStore(pg_url)
    try:
        assert store.integrity_ok()
    finally:
        store.close()
    assert tables(pg_url) == TABLES
    assert meta(pg_url) == {"schema_version": str(SCHEMA_VERSION)}
    with psycopg.connect(pg_url) as db:
        columns = {
            r[0]
            for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox'"
            )
        }
    assert "claimed_epoch" in columns


def test_reopening_a_current_database_writes_nothing(pg_url: str) -> None:
    """A second open finds the latest version and runs no step (the schema is unchanged)."""
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as db:
        before = db.execute("SELECT xmin::text FROM meta WHERE key = 'schema_version'").fetchone()
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as db:
        after = db.execute("SELECT xmin::text FROM meta WHERE key = 'schema_version'").fetchone()
    assert before == after


def test_a_newer_schema_is_refused_and_left_untouched(pg_url: str) -> None:
    """SchemaTooNewError naming the database without its password; nothing is written."""
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as db:
        db.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(99),))
        db.execute("CREATE TABLE from_the_future (x INTEGER)")
    before = tables(pg_url)
    with pytest.raises(SchemaTooNewError) as raised:
        PostgresStore(pg_url)
    message = str(raised.value)
    assert "has schema version 99, newer than this factory-watcher understands" in message
    assert "postgresql://postgres@127.0.0.1:5432/" in message
    assert raised.value.found == 99
    assert tables(pg_url) == before
    assert meta(pg_url)["schema_version"] == "99"


def test_two_replicas_opening_a_fresh_database_at_once_both_succeed(pg_url: str) -> None:
    """The advisory lock serialises them: one migrates, the other finds nothing to do."""
    barrier = threading.Barrier(3)
    opened: list[PostgresStore] = []
    failed: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened.append(PostgresStore(pg_url))
        except BaseException as error:  # reported by the assertion below
            failed.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failed == []
        assert len(opened) == 3
        assert all(store.integrity_ok() for store in opened)
    finally:
        for store in opened:
            store.close()
    assert meta(pg_url) == {"schema_version": str(SCHEMA_VERSION)}


def test_a_failing_step_leaves_the_database_as_it_was(pg_url: str) -> None:
    """All steps run in one transaction: a step that fails rolls back the earlier ones."""

    def broken(db: psycopg.Connection[Any]) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("SELECT no_such_column FROM half_done")

    steps = (*MIGRATIONS, PgMigration(SCHEMA_VERSION + 1, "broken", broken))
    with pytest.raises(StoreError) as raised:
        PostgresStore(pg_url, migrations=steps)
    assert "no_such_column" in str(raised.value)
    assert tables(pg_url) == set()
    store = PostgresStore(pg_url)  # the real steps still apply afterwards
    store.close()
    assert meta(pg_url) == {"schema_version": str(SCHEMA_VERSION)}


def test_a_database_of_the_previous_version_gains_report_runs_and_keeps_its_rows(
    pg_url: str,
) -> None:
    """Step 9 on a version-8 database: report_runs is added, every stored row is kept."""
    old = PostgresStore(pg_url, migrations=[m for m in MIGRATIONS if m.number < 9])
    try:
        e = event(id="e1", session=ref(id="s1"))
        old.record_events([e], [(e, Route("finished", "hook"))], T0)
    finally:
        old.close()
    assert "report_runs" not in tables(pg_url)
    assert meta(pg_url)["schema_version"] == "8"
    store = PostgresStore(pg_url)
    try:
        assert store.report_runs() == {}
        assert store.counts()[OutboxStatus.PENDING] == 1
        assert [r.id for r in store.recent_events("s1")] == ["e1"]
    finally:
        store.close()
    assert tables(pg_url) == TABLES
    assert meta(pg_url)["schema_version"] == "9"
