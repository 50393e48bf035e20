"""The cost of a day's report read: `report_history` on SQLite and on PostgreSQL.

Both stores hold the same simulated day: 1,000 sessions, each polled through
the day with a status change (running and idle in turn) or a messages-added
event, 51,000 events in all, recorded in 1,440 one-minute batches, and every
session's state. A report of the whole day is then read: the rows in one read
transaction (SQLite under the store's lock; PostgreSQL in one REPEATABLE READ
snapshot) and the decoding after. SQLite is a file in a temporary directory;
PostgreSQL a scratch database (`FACTORY_WATCHER_TEST_PG`, default the local
server), created and dropped here.

It prints one line per store: the read, the decoding and the events reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.store_bench import scratch_database  # noqa: E402
from watcher.core.model import Event, EventType, SessionRef, Snapshot  # noqa: E402
from watcher.store import Store  # noqa: E402
from watcher.store.postgres import PostgresStore  # noqa: E402
from watcher.store.postgres.reports import fetch_report_rows as pg_fetch  # noqa: E402
from watcher.store.reportrows import ReportRows, decode_report_rows  # noqa: E402
from watcher.store.sqlite import SqliteStore  # noqa: E402
from watcher.store.sqlite.reports import fetch_report_rows as sqlite_fetch  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=UTC)
MINUTES = 1440


def fill(store: Store, sessions: int, per_session: int) -> int:
    """The simulated day in `store`; how many events it holds."""
    events: list[list[Event]] = [[] for _ in range(MINUTES)]
    for s in range(sessions):
        sid = f"s{s:04d}"
        for n in range(per_session):
            minute = (s + n * MINUTES // per_session) % MINUTES
            at = T0 + timedelta(minutes=minute, seconds=1)
            status = ("running", "idle")[n % 2]
            ref = SessionRef(id=sid, title=f"Session {sid}", status=status, name=sid)
            if n % 3 == 2:
                data: dict[str, Any] = {"added": 2, "count": n}
                kind = EventType.MESSAGES_ADDED
            else:
                data = {"from": "idle" if status == "running" else "running", "to": status}
                kind = EventType.STATUS_CHANGED
            events[minute].append(Event(f"evt_{sid}_{n}", kind, at, ref, data))
    for minute, batch in enumerate(events):
        if batch:
            store.record_events(batch, [], T0 + timedelta(minutes=minute, seconds=1))
    for s in range(sessions):
        sid = f"s{s:04d}"
        snapshot = Snapshot(
            session_id=sid,
            status="idle",
            message_count=per_session,
            created_at=T0,
            updated_at=T0 + timedelta(hours=23),
            title=f"Session {sid}",
        )
        store.record(sid, snapshot, [], [], T0 + timedelta(hours=23))
    return sum(len(b) for b in events)


def measure(name: str, fetch: Callable[[], ReportRows]) -> None:
    """Time the read and the decoding of a day's report; print one line."""
    started = time.perf_counter()
    rows = fetch()
    read = time.perf_counter() - started
    history = decode_report_rows(rows)
    decoded = time.perf_counter() - started - read
    print(
        f"{name:<12} read {read * 1000:7.0f} ms  decode {decoded * 1000:6.0f} ms"
        f"  {len(history.events)} events, {len(history.sessions)} sessions,"
        f" {len(history.run_starts)} run starts"
    )


def main() -> int:
    """Fill each store with the same day; time its report read; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events-per-session", type=int, default=51)
    args = parser.parse_args()
    # The window starts an hour in: each session has a baseline and a run start before it.
    start, end = T0 + timedelta(hours=1), T0 + timedelta(days=1)
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "state.db", durable=False)
        try:
            fill(store, args.sessions, args.events_per_session)
            with store._lock:  # what report_history holds for the read
                measure("sqlite", lambda: sqlite_fetch(store._db, start, end))
        finally:
            store.close()
    with scratch_database() as url:
        pg = PostgresStore(url)
        try:
            fill(pg, args.sessions, args.events_per_session)
            # Statistics as autovacuum keeps them on a day-old table.
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("ANALYZE")
            with pg._connection("bench") as db:
                measure("postgresql", lambda: pg_fetch(db, start, end))
        finally:
            pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
