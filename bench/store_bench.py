"""The cost of recording a poll's change: 1,000 `record` calls on SQLite and on PostgreSQL.

Each call stores a changed snapshot of one of 10 sessions with one new
status-change event routed to one target: the transaction a poll that saw a
transition commits (snapshot, event, sequence number, outbox row). SQLite is
a file in a temporary directory (`synchronous=FULL`, as the daemon writes);
PostgreSQL is a scratch database on `FACTORY_WATCHER_TEST_PG` (default the
local server as user postgres), created and dropped here, once unfenced and
once fenced (each write first checks the leader lease, as a leader's does).

It prints one line per store: total seconds and milliseconds per call.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watcher.core.model import Event, EventType, SessionRef, Snapshot  # noqa: E402
from watcher.core.rules import Route  # noqa: E402
from watcher.store import Store  # noqa: E402
from watcher.store.postgres import PostgresStore  # noqa: E402
from watcher.store.sqlite import SqliteStore  # noqa: E402

ADMIN_URL = os.environ.get(
    "FACTORY_WATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T0 = datetime(2026, 12, 1, tzinfo=UTC)
SESSIONS = 10


def changes(count: int) -> Iterator[tuple[str, Snapshot, Event]]:
    """`count` (session, changed snapshot, its status-change event), sessions in turn."""
    for n in range(count):
        sid = f"s{n % SESSIONS}"
        at = T0 + timedelta(seconds=n)
        status = ("running", "idle")[n // SESSIONS % 2]
        snapshot = Snapshot(
            session_id=sid,
            status=status,
            message_count=n,
            created_at=T0,
            updated_at=at,
            title=f"Session {sid}",
        )
        ref = SessionRef(id=sid, title=f"Session {sid}", status=status, name=sid)
        data = {"from": "idle" if status == "running" else "running", "to": status}
        yield sid, snapshot, Event(f"evt_{n}", EventType.STATUS_CHANGED, at, ref, data)


def time_records(store: Store, count: int) -> float:
    """Seconds for `count` record calls (the inputs are built beforehand)."""
    work = list(changes(count))
    started = time.perf_counter()
    for sid, snapshot, event in work:
        store.record(sid, snapshot, [event], [(event, Route("r", "hook"))], snapshot.updated_at)
    return time.perf_counter() - started


@contextmanager
def scratch_database() -> Iterator[str]:
    """A new PostgreSQL database as a URL, dropped on exit."""
    name = f"fw_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        params = conninfo_to_dict(ADMIN_URL)
        params["dbname"] = name
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def take_lease(url: str) -> int:
    """Hold the leader lease for a minute, as a leader would; its epoch."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(
            "INSERT INTO leader_lease VALUES ('leader', 'bench', 1, now(), now(),"
            " now() + interval '1 minute') RETURNING epoch"
        ).fetchone()
    assert row is not None
    return int(row[0])


def report(name: str, seconds: float, count: int) -> None:
    """One line: the store, total seconds, milliseconds per call."""
    print(f"{name:<22} {count} records: {seconds:7.3f} s  {seconds / count * 1000:6.3f} ms/record")


def main() -> int:
    """Time each store; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "state.db")
        try:
            report("sqlite (FULL)", time_records(store, args.records), args.records)
        finally:
            store.close()
    for fenced in (False, True):
        with scratch_database() as url:
            pg = PostgresStore(url, fenced=fenced)
            try:
                if fenced:
                    pg.set_epoch(take_lease(url))
                name = "postgresql fenced" if fenced else "postgresql"
                report(name, time_records(pg, args.records), args.records)
                assert len(pg.list_outbox(limit=args.records + 1)) == args.records
            finally:
                pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
