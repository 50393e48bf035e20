"""The lease table for tests that run before (or without) the PostgreSQL store's migrations.

The DDL is the store's own (`LEASE_DDL`, the issue 17 contract's), which its first
PostgreSQL migration runs (`IF NOT EXISTS`: either may come first).
"""

from __future__ import annotations

import psycopg

from watcher.store.postgres.migrations import LEASE_DDL


def create_lease_table(url: str) -> None:
    """Create `leader_lease` in the database at `url`."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(LEASE_DDL)


def expire_lease(url: str) -> None:
    """Expire the lease now, on the database's clock (as if its holder stopped renewing)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE leader_lease SET expires_at = now()")


def terminate(url: str, application_name: str) -> int:
    """`pg_terminate_backend` every connection of `application_name` to `url`'s database."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchone()
    return 0 if row is None else int(row[0])
