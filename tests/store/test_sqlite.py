"""What only the SQLite store has: pragmas, files, durability, its read-only view."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.conformance.test_reports import report
from watcher.core.model import Gone
from watcher.core.rules import Route
from watcher.store import (
    OutboxStatus,
    PollMark,
    SqliteReadOnlyStore,
    SqliteStore,
    StatusRows,
    StoreError,
    state_to_json,
)
from watcher.store.migrations import MIGRATIONS, migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store in a fresh file."""
    opened = SqliteStore(tmp_path / "state" / "state.db")
    yield opened
    opened.close()


def test_pragmas_are_wal_and_full_sync(store: SqliteStore) -> None:
    """The database runs in WAL mode with synchronous=FULL."""
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store.synchronous == "FULL"


def test_the_location_is_the_file(store: SqliteStore, tmp_path: Path) -> None:
    """Log lines name the database file; its directory was created."""
    assert store.location == str(tmp_path / "state" / "state.db")
    assert (tmp_path / "state" / "state.db").is_file()


def test_a_store_for_marks_flushes_less(tmp_path: Path) -> None:
    """`durable=False` (the outbox worker's connection) commits with synchronous=NORMAL,
    on the same file, and sees what the durable connection recorded.
    """
    durable = SqliteStore(tmp_path / "state.db")
    marks = SqliteStore(tmp_path / "state.db", durable=False)
    try:
        assert marks.synchronous == "NORMAL"
        assert durable.synchronous == "FULL"
        e = event(id="e1", session=ref(id="s1"))
        durable.record_events([e], [(e, Route("r", "hook"))], T0)
        (row,) = marks.due("hook", T0, 10)
        marks.mark_delivered(row.id, T0, None)
        assert durable.counts()[OutboxStatus.DELIVERED] == 1
    finally:
        marks.close()
        durable.close()


def test_the_delivery_store_is_a_second_connection_that_flushes_less(
    store: SqliteStore,
) -> None:
    """`for_delivery` on a file: another store on the same file with synchronous=NORMAL."""
    marks = store.for_delivery()
    try:
        assert marks is not store
        assert (marks.location, marks.synchronous) == (store.location, "NORMAL")
    finally:
        marks.close()


def test_a_memory_store_delivers_through_itself() -> None:
    """A `:memory:` database lives on one connection: `for_delivery` is the store itself."""
    store = SqliteStore(":memory:")
    try:
        assert store.for_delivery() is store
        assert store.location == ":memory:"
    finally:
        store.close()


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b""])
def test_unusable_file_is_a_store_error(tmp_path: Path, content: bytes) -> None:
    """A file that is not our database is refused with a clear error."""
    path = tmp_path / "s.db"
    path.write_bytes(content)
    if content:
        with pytest.raises(StoreError, match="cannot open state database"):
            SqliteStore(path)
    else:
        SqliteStore(path).close()


def test_the_read_only_view_refuses_what_is_not_a_database(tmp_path: Path) -> None:
    """No file, or a file that is not SQLite: StoreError, and nothing is created."""
    with pytest.raises(StoreError, match="no state database at"):
        SqliteReadOnlyStore(tmp_path / "nope.db")
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    with pytest.raises(StoreError, match="cannot read state database"):
        SqliteReadOnlyStore(tmp_path / "junk.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.db"]


def test_the_read_only_view_reads_what_the_store_wrote(store: SqliteStore) -> None:
    """States, pending and dead rows per target, dead letters and meta, read in one go."""
    store.record("s1", snap(), [], [], T0)
    store.record("s2", snap(session_id="s2", status="idle"), [], [], T0)
    store.record("s9", snap(session_id="s9"), [], [], T0)  # stored, not watched: not read
    events = [event(id="e1"), event(id="e2", session=ref(id="s2"))]
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    first, _ = store.due("hook", T0, 10)
    store.mark_dead(first.id, T0, "HTTP 410")
    store.record_housekeeping([], {"api_state": "up"})
    view = SqliteReadOnlyStore(Path(store.path))
    try:
        rows = view.read_status(["s1", "s2"])
    finally:
        view.close()
    assert rows.meta["api_state"] == "up"
    assert rows.states == {"s1": ("running", False), "s2": ("idle", False)}
    assert rows.since == {"s1": T0, "s2": T0}
    [target] = rows.targets
    assert (target.target, target.pending, target.retrying, target.dead, target.last_error) == (
        "hook",
        1,
        0,
        1,
        "HTTP 410",
    )
    [dead] = rows.dead_letters
    assert (dead.id, dead.event_type, dead.session_id, dead.failed_at) == (
        first.id,
        "session.status_changed",
        "s1",
        T0,
    )


def read_status(path: str, configured: list[str]) -> StatusRows:
    """`read_status` through a read-only view of the file, closed after."""
    view = SqliteReadOnlyStore(Path(path))
    try:
        return view.read_status(configured)
    finally:
        view.close()


def test_status_reads_the_daemons_watched_set_before_the_configured_one(
    store: SqliteStore,
) -> None:
    """Once a daemon wrote its watched set, only those sessions are read."""
    store.record("s1", snap(), [], [], T0)
    store.record("s2", snap(session_id="s2"), [], [], T0)
    assert set(read_status(store.path, ["s1", "s2"]).states) == {"s1", "s2"}
    store.record_housekeeping(
        [PollMark("s2", T0, "ok", None), PollMark("s1", T0, "ok", None)],
        {"watched": '[{"id": "s2", "name": null}]'},
    )
    rows = read_status(store.path, ["s1"])
    assert set(rows.states) == {"s2"}
    assert set(rows.polls) == {"s2"}
    store.record_housekeeping([], {"watched": "[]"}, watched=["s2"])  # s1 left: its mark goes
    store.record_housekeeping([], {"watched": '[{"id": "s1"}, {"id": "s2"}]'})
    assert set(read_status(store.path, []).polls) == {"s2"}


@pytest.mark.parametrize("value", ["{broken", '{"id": "s1"}', '[{"name": "s1"}]', "[1]"])
def test_a_damaged_watched_set_is_a_store_error(store: SqliteStore, value: str) -> None:
    """The daemon's watched set that cannot be read is a clear error, not a traceback."""
    store.record_housekeeping([], {"watched": value})
    with pytest.raises(StoreError, match="watched set in the state database cannot be read"):
        read_status(store.path, ["s1"])


def test_a_database_from_before_the_session_facts_is_read_as_it_is(tmp_path: Path) -> None:
    """`status` never migrates: a version 6 file is read from its documents, events and outbox."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, str(path), MIGRATIONS[:6])
    db.execute(
        "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, 0)",
        ("s1", state_to_json(Gone("s1", snap(status="idle")))),
    )
    db.execute(
        "INSERT INTO events(id, session_id, type, occurred_at, body, recorded_at)"
        " VALUES ('e1', 's1', 'session.deleted', ?, '{}', 0)",
        (T0.timestamp(),),
    )
    db.execute(
        "INSERT INTO outbox(event_id, target, rule, lane, status, created_at, next_attempt_at,"
        " finished_at) VALUES ('e1', 'hook', 'r', 's1', 'delivered', 0, 0, ?)",
        (T0.timestamp() + 1,),
    )
    db.close()
    rows = read_status(str(path), ["s1"])
    assert rows.states == {"s1": ("idle", True)}
    assert rows.since == {"s1": T0}
    assert rows.notified == {"s1": T0 + timedelta(seconds=1)}


def test_a_damaged_document_in_an_old_database_does_not_stop_status(tmp_path: Path) -> None:
    """A version 6 row that is not JSON shows no status; the other sessions are read."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, str(path), MIGRATIONS[:6])
    db.execute(
        "INSERT INTO sessions(session_id, state, stored_at) VALUES (?, ?, 0)",
        ("s1", state_to_json(snap(status="idle"))),
    )
    db.execute("INSERT INTO sessions(session_id, state, stored_at) VALUES ('s2', '{broken', 0)")
    db.close()
    rows = read_status(str(path), ["s1", "s2"])
    assert rows.states == {"s1": ("idle", False), "s2": (None, False)}


def test_the_read_only_view_refuses_a_database_that_is_not_ours(tmp_path: Path) -> None:
    """An SQLite file without our tables is not read as an empty watcher."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    view = SqliteReadOnlyStore(path)
    try:
        with pytest.raises(StoreError, match="is not a factory-watcher state database"):
            view.read_status()
    finally:
        view.close()


def test_a_copy_is_whole_and_standalone(store: SqliteStore, tmp_path: Path) -> None:
    """`copy_to` writes a checked copy in rollback-journal mode; it opens as the same store."""
    e = event()
    store.record("s1", snap(), [e], [(e, Route("r", "hook"))], T0)
    view = SqliteReadOnlyStore(Path(store.path))
    try:
        pages = view.copy_to(tmp_path / "copy.db")
    finally:
        view.close()
    assert pages > 0
    db = sqlite3.connect(tmp_path / "copy.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()
    copy = SqliteStore(tmp_path / "copy.db")
    try:
        assert copy.load_state("s1") == snap()
        assert copy.counts()[OutboxStatus.PENDING] == 1
    finally:
        copy.close()


def test_opening_a_current_database_does_not_wait_for_the_writer(tmp_path: Path) -> None:
    """A daemon's open write transaction does not hold up a second store's open (no write)."""
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
        reader = SqliteStore(path)  # would wait 5 s and fail if it wrote at open
        try:
            assert reader.counts()[OutboxStatus.PENDING] == 0
        finally:
            reader.close()
        writer.execute("COMMIT")
    finally:
        writer.close()


def test_status_reads_each_reports_last_run(store: SqliteStore) -> None:
    """`read_status` has the scheduled time each report last ran for."""
    assert read_status(store.path, []).report_runs == {}
    for name, at in (("daily", T0), ("hourly", T0 + timedelta(hours=1))):
        run = report(name, at)
        store.record_report(name, at, run, [(run, Route(name, "hook"))], at)
    assert read_status(store.path, []).report_runs == {
        "daily": T0,
        "hourly": T0 + timedelta(hours=1),
    }


def test_status_reads_a_database_from_before_reports(tmp_path: Path) -> None:
    """A file no build with reports has opened (no report_runs table) shows no report runs."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(db, str(path), MIGRATIONS[:8])
    finally:
        db.close()
    assert read_status(str(path), []).report_runs == {}
