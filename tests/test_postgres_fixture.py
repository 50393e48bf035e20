"""The PostgreSQL test fixture gives each test a database of its own and drops it after."""

from __future__ import annotations

import psycopg

from tests.postgres import ADMIN_URL, scratch_database


def test_scratch_database_is_empty_and_dropped_after() -> None:
    """A scratch database starts with no tables and is gone once the block ends."""
    with scratch_database() as url:
        with psycopg.connect(url) as db:
            (tables,) = db.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone() or (None,)
            (name,) = db.execute("SELECT current_database()").fetchone() or (None,)
        assert tables == 0
    with psycopg.connect(ADMIN_URL) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert row is None
