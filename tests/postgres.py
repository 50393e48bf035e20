"""PostgreSQL for tests: a throwaway database per test on the local server, or a clear skip.

The server is `FACTORY_WATCHER_TEST_PG` (a libpq URL of a database the test
user may `CREATE DATABASE` from; default the machine's own server on
127.0.0.1:5432 as user postgres). Each test gets a database of its own,
dropped afterwards even when connections to it are still open. When no server
answers, tests skip with the reason, unless `FACTORY_WATCHER_REQUIRE_PG=1`
(set by `.ci/run`): then they fail, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URL = os.environ.get(
    "FACTORY_WATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRED = os.environ.get("FACTORY_WATCHER_REQUIRE_PG") == "1"

_problem: list[str | None] = []


def server_problem() -> str | None:
    """Why the test server cannot be used (None: it can); asked once per test run."""
    if not _problem:
        try:
            with psycopg.connect(ADMIN_URL, connect_timeout=3, autocommit=True) as db:
                db.execute("SELECT 1")
            _problem.append(None)
        except psycopg.Error as error:
            _problem.append(f"no PostgreSQL server at {ADMIN_URL}: {error}".strip())
    return _problem[0]


def require_server() -> None:
    """Skip the calling test (or fail it, under `FACTORY_WATCHER_REQUIRE_PG=1`) without a server."""
    problem = server_problem()
    if problem is None:
        return
    if REQUIRED:
        pytest.fail(f"{problem} (FACTORY_WATCHER_REQUIRE_PG=1)")
    pytest.skip(problem)


def url_for(database: str) -> str:
    """The test server's URL with `database` as the database."""
    params = conninfo_to_dict(ADMIN_URL)
    params["dbname"] = database
    return make_conninfo(**params)


@contextmanager
def scratch_database(prefix: str = "fw_test") -> Iterator[str]:
    """A new empty database on the test server, as a URL; dropped on exit."""
    require_server()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_for(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
