"""The lease as `status` reads it from PostgreSQL: none before a replica took it, then the
holder, epoch and times on the database's clock."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore
from watcher.store.postgres.leaseview import read_lease

pytestmark = pytest.mark.postgres


def test_no_lease_before_any_replica_took_it(pg_url: str) -> None:
    """A fresh state database: `read_status` has no lease."""
    PostgresStore(pg_url).close()
    view = PostgresReadOnlyStore(pg_url)
    try:
        assert view.read_status([]).lease is None
    finally:
        view.close()


@pytest.mark.parametrize(
    ("expires", "held"),
    [("now() + interval '8 seconds'", True), ("now() - interval '1 minute'", False)],
)
def test_the_lease_row_is_read_with_the_database_clock(
    pg_url: str, expires: str, held: bool
) -> None:
    """Holder, epoch and times as stored, in UTC; expires_in measured against the server's now()."""
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        # The reader's session zone (the database's default here) must not matter.
        name = db.execute("SELECT current_database()").fetchone()
        assert name is not None
        db.execute(
            sql.SQL("ALTER DATABASE {} SET TIME ZONE 'Asia/Kolkata'").format(
                sql.Identifier(name[0])
            )
        )
        db.execute(
            "INSERT INTO leader_lease VALUES ('leader', 'h:1:abcd', 4, now() - interval '1 hour',"
            f" now() - interval '2 seconds', {expires})"
        )
    view = PostgresReadOnlyStore(pg_url)
    try:
        lease = view.read_status([]).lease
    finally:
        view.close()
    assert lease is not None
    assert (lease.holder, lease.epoch) == ("h:1:abcd", 4)
    assert lease.expires_at.tzname() == "UTC"
    assert (lease.expires_in > 0) is held
    if held:
        assert 0 < lease.expires_in <= 8
    assert (lease.read_at - lease.acquired_at).total_seconds() >= 3600


def test_a_database_without_the_lease_table_has_no_lease(pg_url: str) -> None:
    """read_lease on a database lacking leader_lease answers None rather than failing."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert read_lease(db) is None
