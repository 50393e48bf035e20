"""`make bench`: start-up, housekeeping and `status` cost the same with a million rows as without.

Two state databases are built in a temporary directory, both through the
store (so through the current schema and its migrations), each holding what
the 100 sessions a config watches show now (their states, the status change
behind each, and its notification, delivered):

- empty: nothing else, no history;
- full: `--events` events (default 1,000,000) spread over `--sessions`
  sessions ever seen (default 10,000, the watched ones among them), each
  event with one delivered outbox row, plus a state and a poll mark for every
  session. The filler goes in by bulk SQL (a recursive CTE), which is how it
  stays within a minute.

Then each operation is timed on both databases, interleaved, many times:

- start-up: construct a `Watcher` over the config (open, migration check,
  discovery and the watched sessions' states) and close it;
- housekeeping: one round of the supervisor's, every 5 s in the daemon (poll
  marks and meta written in one transaction, outbox figures read, session
  figures set for `/metrics`, the `STATUS=` line);
- status: `factory-watcher status`'s `read_status` of the database.

It prints one row per operation: the median time on each database, their
ratio, and `ok` when the full database is within `--tolerance` (10%) of the
empty one, else `missed`. Exit status: 0 when every row is ok, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watcher.commands.status import read_status  # noqa: E402
from watcher.core.discovery import ListPage  # noqa: E402
from watcher.core.model import Event, EventType, SessionRef, Snapshot  # noqa: E402
from watcher.core.poll import Answer, FetchFailed, NotFound  # noqa: E402
from watcher.core.rules import Route  # noqa: E402
from watcher.core.secret import Secret  # noqa: E402
from watcher.core.settings import (  # noqa: E402
    FactorySettings,
    PollSettings,
    Settings,
    WatchedSession,
)
from watcher.daemon import Watcher  # noqa: E402
from watcher.ops.systemd import SystemdNotifier  # noqa: E402
from watcher.store import PollMark, SqliteStore, state_to_json  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WATCHED = 100


class QuietSource:
    """A session source that is never asked during the benchmark (nothing is polled)."""

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Every session is gone."""
        return NotFound()

    def forget(self, session_id: str) -> None:
        """Nothing kept."""

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """An empty list."""
        return ListPage((), None)

    async def aclose(self) -> None:
        """Nothing to close."""


def snapshot(session_id: str, n: int) -> Snapshot:
    """A session that finished a run (`idle`), as the API would describe it."""
    return Snapshot(
        session_id=session_id,
        status="idle" if n % 3 else "running",
        message_count=n % 50,
        created_at=T0 - timedelta(days=30),
        updated_at=T0 - timedelta(minutes=n % 600),
        title=f"Session {session_id}",
    )


def settings_for(path: Path) -> Settings:
    """A config watching `WATCHED` sessions (h0 .. h99) with its state at `path`."""
    return Settings(
        factory=FactorySettings(
            api_key=Secret("fk-bench-history-0000"), max_requests_per_second=10
        ),
        state_path=path,
        poll=PollSettings(interval=timedelta(seconds=30), jitter=0.0),
        sessions=tuple(WatchedSession(id=f"h{i}", name=f"bench-{i}") for i in range(WATCHED)),
    )


def build(path: Path, events: int, sessions: int) -> None:
    """A state database with what the watched sessions show now, and `events` rows of history.

    Both databases get, through the store, each watched session's state, the
    status change that led to it, that notification (delivered) and a poll
    mark: what `status` shows of them. The history is older than all of that.
    """
    store = SqliteStore(path)
    try:
        for i in range(WATCHED):
            sid = f"h{i}"
            current = snapshot(sid, i)
            change = Event(
                id=f"evt_current_{sid}",
                type=EventType.STATUS_CHANGED,
                occurred_at=T0,
                session=SessionRef(id=sid, title=current.title, status=current.status),
                data={"from": "running", "to": current.status},
            )
            store.record(sid, current, [change], [(change, Route("r", "hook"))], T0)
        for row in store.due("hook", T0, WATCHED):
            store.mark_delivered(row.id, T0 + timedelta(seconds=1), None)
        store.record_housekeeping(
            [PollMark(f"h{i}", T0, "changed", None) for i in range(WATCHED)], {}
        )
    finally:
        store.close()
    if not events:
        return
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")  # filler only: the file is thrown away
        db.execute("BEGIN")
        state = state_to_json(snapshot("SID", 1))
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
            " INSERT INTO sessions(session_id, state, stored_at)"
            " SELECT 'h' || i, replace(?, 'SID', 'h' || i), ? FROM n",
            (WATCHED, sessions, state, T0.timestamp()),
        )
        if "status" in {r[1] for r in db.execute("PRAGMA table_info(sessions)")}:
            # The columns a state is written with (absent before schema 7: older builds).
            db.execute("UPDATE sessions SET status = 'idle' WHERE status IS NULL")
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
            " INSERT INTO polls(session_id, polled_at, outcome, next_poll_at)"
            " SELECT 'h' || i, ?, 'unchanged', NULL FROM n",
            (WATCHED, sessions, T0.timestamp()),
        )
        # One in four events changes a status (what `status` shows as "since").
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
            " INSERT INTO events(id, session_id, type, occurred_at, body, recorded_at, sequence)"
            " SELECT printf('evt_%012d', i), 'h' || (i % ?),"
            " CASE WHEN i % 4 = 0 THEN 'session.status_changed'"
            " ELSE 'session.messages_added' END, ? + i, json_object('v', 1, 'id',"
            " printf('evt_%012d', i), 'type', 'session.messages_added', 'occurred_at',"
            " ? + i, 'session', json_object('id', 'h' || (i % ?), 'title', 'Session',"
            " 'status', 'idle'), 'data', json_object('added', 1, 'total', i % 50)),"
            " ? + i, i / ? + 1 FROM n",
            (
                events,
                sessions,
                T0.timestamp() - events,
                T0.timestamp() - events,
                sessions,
                T0.timestamp() - events,
                sessions,
            ),
        )
        db.execute(
            "INSERT OR IGNORE INTO outbox(event_id, target, rule, lane, status, attempts,"
            " created_at, next_attempt_at, finished_at) SELECT id, 'hook', 'r', session_id,"
            " 'delivered', 1, occurred_at, occurred_at, occurred_at + 1 FROM events"
        )
        db.execute(
            "INSERT INTO sequences(lane, last) SELECT session_id, MAX(sequence) FROM events"
            " GROUP BY session_id ON CONFLICT(lane) DO UPDATE SET last = excluded.last"
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def watcher_for(path: Path) -> Watcher:
    """A watcher over the benchmark's config, with no API and no systemd."""
    return Watcher(
        settings_for(path),
        source=QuietSource(),
        clock=lambda: T0,
        systemd=SystemdNotifier(address=None),
    )


def start_up(path: Path) -> float:
    """Seconds to construct a watcher over `path` and close it again."""
    started = time.perf_counter()
    watcher = watcher_for(path)
    anyio.run(watcher.aclose)
    watcher.store.close()
    return time.perf_counter() - started


def housekeeping(empty: Path, full: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds per housekeeping round of a watcher over each database, alternately, in one loop.

    Every round writes a poll mark for each watched session, as a busy daemon's would.
    """

    async def rounds() -> tuple[list[float], list[float]]:
        watchers = [watcher_for(empty), watcher_for(full)]
        times: tuple[list[float], list[float]] = ([], [])
        try:
            for n in range(repeat + 1):
                order = (0, 1) if n % 2 else (1, 0)
                for i in order:
                    watcher = watchers[i]
                    watcher.stats.polled = {sid: (T0, "unchanged") for sid in watcher.book.watched}
                    started = time.perf_counter()
                    await watcher.supervisor.housekeeping()
                    await watcher.supervisor.status_line()  # the same 5 s round does both
                    if n:  # the first round of each is a warm-up (it writes the watched set)
                        times[i].append(time.perf_counter() - started)
        finally:
            for watcher in watchers:
                await watcher.aclose()
                watcher.store.close()
        return times

    return anyio.run(rounds)


def status(path: Path) -> float:
    """Seconds for `status` to read the database and build its report."""
    configured = settings_for(path).sessions
    started = time.perf_counter()
    report = read_status(path, configured, now=T0)
    elapsed = time.perf_counter() - started
    assert len(report.sessions) == WATCHED
    return elapsed


def alternate(
    empty: Callable[[], float], full: Callable[[], float], repeat: int
) -> tuple[list[float], list[float]]:
    """`repeat` timings of each after a warm-up, in alternating order so drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for n in range(repeat + 1):
        for i in (0, 1) if n % 2 else (1, 0):
            elapsed = (empty, full)[i]()
            if n:
                times[i].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    """Build both databases, time each operation on both, print the table; 1 on a miss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events (and rows)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions ever seen")
    parser.add_argument("--repeat", type=int, default=200, help="timings of each operation")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed slowdown")
    args = parser.parse_args(argv)
    sessions = max(args.sessions, WATCHED)
    with tempfile.TemporaryDirectory(prefix="fw-history-") as tmp:
        empty, full = Path(tmp) / "empty.db", Path(tmp) / "full.db"
        started = time.perf_counter()
        build(empty, 0, WATCHED)
        build(full, args.events, sessions)
        size = full.stat().st_size / 1e6
        print(
            f"built in {time.perf_counter() - started:.0f}s: full database {size:.0f} MB,"
            f" {args.events:,} events and delivered rows, {sessions:,} sessions,"
            f" {WATCHED} watched",
            flush=True,
        )
        timings = {
            "start-up": alternate(lambda: start_up(empty), lambda: start_up(full), args.repeat),
            "housekeeping": housekeeping(empty, full, args.repeat),
            "status": alternate(lambda: status(empty), lambda: status(full), args.repeat),
        }
    rows = [
        (name, statistics.median(on_empty), statistics.median(on_full))
        for name, (on_empty, on_full) in timings.items()
    ]
    limit = 1 + args.tolerance
    print(f"{'operation':<14}{'empty':>12}{'full':>12}{'ratio':>8}  target <= {limit:.2f}")
    missed = 0
    for name, on_empty, on_full in rows:
        ratio = on_full / on_empty
        verdict = "ok" if ratio <= limit else "missed"
        missed += verdict == "missed"
        print(
            f"{name:<14}{on_empty * 1e3:>10.2f}ms{on_full * 1e3:>10.2f}ms{ratio:>8.2f}  {verdict}"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
