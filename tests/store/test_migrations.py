"""Ordered schema migrations: a release 0.1 database, each intermediate version, refusals.

`tests/data/state-release-0.1.db` was written by release 0.1 (commit 0513623)
with `tests/data/make_release_db.py`; its docstring lists what the file holds.
Every test works on a copy.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.conformance.test_reports import report
from watcher.core.model import EventType
from watcher.core.rules import Route
from watcher.core.rulestate import MuteKind
from watcher.core.settings import WebhookTarget
from watcher.delivery import DeliveryWorker
from watcher.notifiers.webhook import WebhookNotifier
from watcher.store import (
    SCHEMA_VERSION,
    OutboxRow,
    OutboxStatus,
    SchemaTooNewError,
    SqliteStore,
    StoreError,
)
from watcher.store.migrations import MIGRATIONS, Migration, migrate
from watcher.testing.sinks import WebhookReceiver

RELEASE_DB = Path(__file__).resolve().parents[1] / "data" / "state-release-0.1.db"
M = timedelta(minutes=1)
# The release database's outbox (see make_release_db.py): pending rows by id and event.
PENDING = {
    1: "evt_s1_idle",
    2: "evt_s1_finished",
    3: "evt_watcher_recovered",
    4: "evt_s2_finished",  # retrying, due again at T0 + 1 min
}


def schema(path: Path) -> set[tuple[str, str, str, str | None]]:
    """The database's `sqlite_master`, whitespace normalised."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        db.close()
    return {(t, n, tbl, None if sql is None else " ".join(sql.split())) for t, n, tbl, sql in rows}


def version(path: Path) -> int:
    """`meta.schema_version`, read without the store."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    finally:
        db.close()


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of `sql` on the file, read without the store."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def execute(path: Path, *statements: str) -> None:
    """Change the file behind the store's back (an older build's database)."""
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def built_with(path: Path, steps: tuple[Migration, ...]) -> Path:
    """A fresh database at `path` that ran only `steps`."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(db, str(path), steps)
    finally:
        db.close()
    return path


@pytest.fixture
def fresh_schema(tmp_path: Path) -> set[tuple[str, str, str, str | None]]:
    """The schema of a database the store created."""
    SqliteStore(tmp_path / "fresh.db").close()
    return schema(tmp_path / "fresh.db")


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A copy of the release 0.1 database."""
    copy = tmp_path / "release.db"
    shutil.copyfile(RELEASE_DB, copy)
    return copy


@pytest.fixture
def migrated(release: Path) -> Iterator[SqliteStore]:
    """The release copy, opened (so migrated) by this code."""
    store = SqliteStore(release)
    yield store
    store.close()


def test_the_steps_are_numbered_one_to_the_schema_version() -> None:
    """Numbers are 1, 2, ... without gaps, and the last is the version the store writes."""
    assert [m.number for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].number == SCHEMA_VERSION


def test_a_fresh_database_runs_every_step(tmp_path: Path) -> None:
    """A new file gets the latest version."""
    SqliteStore(tmp_path / "new.db").close()
    assert version(tmp_path / "new.db") == SCHEMA_VERSION


def test_the_release_database_is_migrated_to_the_fresh_schema(
    release: Path, fresh_schema: set[tuple[str, str, str, str | None]]
) -> None:
    """Version 1 with later tables already there: the version moves, the schema is a fresh one."""
    assert version(release) == 1
    SqliteStore(release).close()
    assert version(release) == SCHEMA_VERSION
    assert schema(release) == fresh_schema


def test_nothing_pending_in_the_release_database_is_lost(release: Path) -> None:
    """The same rows pending, the same sequences, the same rows due when they were due."""
    before = raw(
        release,
        "SELECT o.id, e.id, e.sequence FROM outbox o JOIN events e ON e.id = o.event_id"
        " WHERE o.status='pending' ORDER BY o.id",
    )
    lanes = raw(release, "SELECT lane, last FROM sequences ORDER BY lane")
    store = SqliteStore(release)
    try:
        pending = store.list_outbox(OutboxStatus.PENDING)
        assert all(isinstance(r, OutboxRow) for r in pending)
        after = [
            (r.id, r.event.id, r.event.sequence)
            for r in reversed(pending)
            if isinstance(r, OutboxRow)
        ]
        assert after == before
        assert {r.id: r.event.id for r in pending if isinstance(r, OutboxRow)} == PENDING
        assert [r.id for r in store.due("hook", T0, 10)] == [1, 3]  # lane heads; 4 waits
        assert [r.id for r in store.due("hook", T0 + M, 10)] == [1, 3, 4]
        assert store.next_due("hook") == T0
        assert raw(release, "SELECT lane, last FROM sequences ORDER BY lane") == lanes
        newer = event(EventType.DELETED, id="evt_s1_deleted")
        store.record("s1", snap(), [newer], [(newer, Route("r", "hook"))], T0 + M)
        latest = store.list_outbox(OutboxStatus.PENDING)[0]
        assert isinstance(latest, OutboxRow)
        assert (latest.event.id, latest.event.sequence) == ("evt_s1_deleted", 4)
    finally:
        store.close()


def test_the_release_database_keeps_its_history_and_rule_state(migrated: SqliteStore) -> None:
    """Delivered rows are not due again, dead letters are listed, rule state reads back."""
    delivered = migrated.list_outbox(OutboxStatus.DELIVERED)
    assert sorted((r.target, r.session_id) for r in delivered) == [
        ("hook", "s3"),
        ("team-slack", "s5"),
    ]
    assert migrated.due("team-slack", T0 + M, 10) == []
    [dead] = migrated.list_outbox(OutboxStatus.DEAD)
    assert (dead.session_id, dead.last_error) == ("s4", "permanent failure: HTTP 410")
    card = migrated.card("team-slack", "s5")
    assert card is not None
    assert card.ts == "1764331200.000100"
    assert set(migrated.load_memory("s1").rules) == {"finished"}
    assert migrated.due_sessions(T0 + 5 * M) == ["s1"]
    [held] = migrated.due_held(T0 + timedelta(hours=8))
    assert (held.held.target, held.held.event.id, held.held.event.sequence) == (
        "hook",
        "evt_s1_started",
        3,
    )
    assert [(m.kind, m.value) for m in migrated.active_mutes(T0)] == [(MuteKind.SESSION, "s4")]
    assert migrated.discovered().session_ids == {"s1", "s2"}
    assert migrated.discovered().first_at == T0
    ids = ["s1", "s2", "s3", "s4", "s5"]
    assert set(migrated.load_states(ids).states) == set(ids)
    assert [d.rule for d in migrated.recent_decisions("s1")] == ["begin"]


@pytest.mark.anyio
async def test_the_migrated_release_database_goes_on_delivering(migrated: SqliteStore) -> None:
    """The real worker and webhook notifier send exactly the pending rows, once, in order."""
    with WebhookReceiver() as receiver:
        target = WebhookTarget(name="hook", url=receiver.url + "/hook", allow_http=True)
        notifier = WebhookNotifier(target)
        worker = DeliveryWorker(migrated.for_delivery(), clock=lambda: T0 + 2 * M)
        try:
            sent = await worker.drain_once({"hook": target}, {"hook": notifier})
            again = await worker.drain_once({"hook": target}, {"hook": notifier})
        finally:
            await notifier.aclose()
        bodies = [r.json for r in receiver.requests]
    assert (sent, again) == (4, 0)
    assert sorted((b["id"], b["sequence"]) for b in bodies) == sorted(
        [
            ("evt_s1_idle", 1),
            ("evt_s1_finished", 2),
            ("evt_watcher_recovered", 1),
            ("evt_s2_finished", 1),
        ]
    )
    s1 = [b["id"] for b in bodies if b["session"] and b["session"]["id"] == "s1"]
    assert s1 == ["evt_s1_idle", "evt_s1_finished"]  # one session's rows in order
    assert migrated.counts() == {
        OutboxStatus.PENDING: 0,
        OutboxStatus.DELIVERED: 6,
        OutboxStatus.DEAD: 1,
    }


@pytest.mark.parametrize("reached", range(1, SCHEMA_VERSION))
def test_a_database_at_each_older_version_migrates_to_the_fresh_schema(
    tmp_path: Path, reached: int, fresh_schema: set[tuple[str, str, str, str | None]]
) -> None:
    """Steps 1..N on a fresh file, then an open: the rest run, and the schema is a fresh one."""
    path = built_with(tmp_path / "old.db", MIGRATIONS[:reached])
    assert version(path) == reached
    assert schema(path) != fresh_schema
    store = SqliteStore(path)
    try:
        e = event()
        store.record("s1", snap(), [e], [(e, Route("r", "hook"))], T0)
        assert store.counts()[OutboxStatus.PENDING] == 1
    finally:
        store.close()
    assert version(path) == SCHEMA_VERSION
    assert schema(path) == fresh_schema


def test_a_database_from_before_sequences_numbers_its_stored_events(tmp_path: Path) -> None:
    """Events stored by an older build get sequences in the order they were recorded."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    events = [
        event(id="e1"),
        event(EventType.ARCHIVED, id="e2"),
        event(id="e3", session=ref(id="s2")),
    ]
    store.record("s1", snap(), events, [(e, Route("r", "hook")) for e in events], T0)
    store.close()
    execute(
        path,
        "ALTER TABLE events DROP COLUMN sequence",
        "DELETE FROM sequences",
        "UPDATE meta SET value='4' WHERE key='schema_version'",
    )
    store = SqliteStore(path)
    try:
        pending = [
            r for r in reversed(store.list_outbox(OutboxStatus.PENDING)) if isinstance(r, OutboxRow)
        ]
        assert [(r.event.id, r.event.sequence) for r in pending] == [
            ("e1", 1),
            ("e2", 2),
            ("e3", 1),
        ]
        newer = event(EventType.DELETED, id="e4")
        store.record("s1", snap(), [newer], [(newer, Route("r", "hook"))], T0)
        latest = store.list_outbox(OutboxStatus.PENDING)[0]
        assert isinstance(latest, OutboxRow)
        assert (latest.event.id, latest.event.sequence) == ("e4", 3)
    finally:
        store.close()


def test_a_database_from_before_cards_opens_and_gets_the_table(tmp_path: Path) -> None:
    """An existing state file without a cards table keeps working and gains one."""
    path = tmp_path / "old.db"
    old = SqliteStore(path)
    old.record_events([event()], [(event(), Route("r", "slack"))], T0)
    old.close()
    execute(path, "DROP TABLE cards", "UPDATE meta SET value='5' WHERE key='schema_version'")
    reopened = SqliteStore(path)
    try:
        assert reopened.card("slack", "s1") is None
        assert len(reopened.pending_lane("slack", "s1", 10)) == 1
    finally:
        reopened.close()


def test_a_cards_table_from_before_replaced_links_gains_the_column(tmp_path: Path) -> None:
    """The cards step adds `replaced_url` to a cards table made without it."""
    path = built_with(tmp_path / "old.db", MIGRATIONS[:5])
    execute(
        path,
        "CREATE TABLE cards (target TEXT NOT NULL, session_id TEXT NOT NULL, channel TEXT NOT NULL,"
        " ts TEXT, marker TEXT NOT NULL, posting_since REAL, replaced_ts TEXT,"
        " replaced_reason TEXT, updated_at REAL NOT NULL, PRIMARY KEY (target, session_id))",
    )
    SqliteStore(path).close()
    assert "replaced_url" in {r[1] for r in raw(path, "PRAGMA table_info(cards)")}


def test_a_newer_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A version above ours: SchemaTooNewError naming file, both versions and what to do."""
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    execute(path, f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError) as refused:
        SqliteStore(path)
    message = str(refused.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this" in message
    assert f"understands ({SCHEMA_VERSION})" in message
    assert "backup" in message
    assert isinstance(refused.value, StoreError)
    assert (refused.value.found, refused.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert path.read_bytes() == before


def test_a_failing_step_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    """Every step runs in one transaction: a step that fails undoes the ones before it."""
    path = built_with(tmp_path / "old.db", MIGRATIONS[:1])
    before = schema(path)

    def fails(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("step 7 went wrong")

    steps = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "fails", fails))
    with pytest.raises(RuntimeError, match="step 7 went wrong"):
        SqliteStore(path, migrations=steps)
    assert schema(path) == before
    assert version(path) == 1
    SqliteStore(path).close()  # and the real steps still apply afterwards
    assert version(path) == SCHEMA_VERSION


def test_the_flat_costs_step_fills_each_sessions_facts_from_what_is_stored(
    release: Path,
) -> None:
    """Every release session row gets its status, gone flag, last change and last notified."""
    expected = raw(
        release,
        "SELECT session_id, coalesce(json_extract(state, '$.snapshot.status'),"
        " json_extract(state, '$.last.status')), json_extract(state, '$.gone'),"
        " (SELECT MAX(occurred_at) FROM events e WHERE e.session_id = s.session_id AND e.type"
        " IN ('session.discovered', 'session.status_changed', 'session.deleted')),"
        " (SELECT MAX(finished_at) FROM outbox o WHERE o.lane = s.session_id"
        " AND o.status = 'delivered') FROM sessions s ORDER BY session_id",
    )
    assert len(expected) == 5
    assert any(row[3] is not None for row in expected)
    assert any(row[4] is not None for row in expected)
    SqliteStore(release).close()
    assert (
        raw(
            release,
            "SELECT session_id, status, gone, changed_at, notified_at FROM sessions"
            " ORDER BY session_id",
        )
        == expected
    )


def test_a_damaged_session_row_does_not_stop_the_flat_costs_step(tmp_path: Path) -> None:
    """A row whose document is not JSON keeps empty columns; loading sets it aside."""
    path = built_with(tmp_path / "old.db", MIGRATIONS[:6])
    execute(
        path,
        "INSERT INTO sessions(session_id, state, stored_at) VALUES ('s1', '{broken', 0)",
    )
    store = SqliteStore(path)
    try:
        assert raw(path, "SELECT status, gone FROM sessions") == [(None, 0)]
        [unreadable] = store.load_states(["s1"]).unreadable
        assert unreadable.session_id == "s1"
    finally:
        store.close()
    assert version(path) == SCHEMA_VERSION


def test_a_database_from_before_reports_keeps_its_rows_and_records_report_runs(
    tmp_path: Path,
) -> None:
    """Step 9 on a version 8 file: its outbox stays as it was, and report runs can be recorded."""
    path = built_with(tmp_path / "old.db", MIGRATIONS[:8])
    old = SqliteStore(path, migrations=MIGRATIONS[:8])
    e = event()
    old.record("s1", snap(), [e], [(e, Route("r", "hook"))], T0)
    old.close()
    assert "report_runs" not in {r[0] for r in raw(path, "SELECT name FROM sqlite_master")}
    store = SqliteStore(path)
    try:
        assert store.report_runs() == {}
        run = report("daily", T0)
        assert store.record_report("daily", T0, run, [(run, Route("daily", "hook"))], T0) == 1
        assert store.report_runs() == {"daily": T0}
        assert store.counts()[OutboxStatus.PENDING] == 2
    finally:
        store.close()
    assert version(path) == SCHEMA_VERSION == 9
