"""The SQLite state store and outbox."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, event, ref, snap
from watcher.core.model import EventType, Gone, Snapshot, TokenUsage
from watcher.core.rules import Route
from watcher.store import (
    Card,
    Discovered,
    OutboxRow,
    OutboxStatus,
    Recorded,
    SqliteStore,
    StoreError,
    UnreadableRow,
    event_from_json,
    event_to_json,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store in a fresh file."""
    opened = SqliteStore(tmp_path / "state" / "state.db")
    yield opened
    opened.close()


def two_events() -> list:
    """Two events on s1 and one on s2."""
    return [
        event(id="e1"),
        event(EventType.ARCHIVED, id="e2"),
        event(id="e3", session=event().session.__class__(id="s2")),
    ]


def test_pragmas_are_wal_and_full_sync(store: SqliteStore) -> None:
    """The database runs in WAL mode with synchronous=FULL."""
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_state_round_trip(store: SqliteStore) -> None:
    """Snapshots and Gone states come back as stored."""
    assert store.load_state("s1") is None
    store.record("s1", snap(), [], [], T0)
    assert store.load_state("s1") == snap()
    store.record("s1", Gone("s1", snap()), [], [], T0)
    assert store.load_state("s1") == Gone("s1", snap())


def test_record_is_idempotent(store: SqliteStore) -> None:
    """Recording the same events and routes twice queues each notification once."""
    e = event()
    routes = [(e, Route("r", "slack")), (e, Route("r", "hook"))]
    assert store.record("s1", snap(), [e], routes, T0) == 2
    assert store.record("s1", snap(), [e], routes, T0) == 0
    assert store.counts()[OutboxStatus.PENDING] == 2


def test_due_returns_one_head_per_session_lane_in_order(store: SqliteStore) -> None:
    """Only the oldest pending row of each session is due, so order per session holds."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    due = store.due("slack", T0, 10)
    assert [r.event.id for r in due] == ["e1", "e3"]
    store.mark_delivered(due[0].id, T0, "ts1")
    assert [r.event.id for r in store.due("slack", T0, 10)] == ["e2", "e3"]
    assert store.due("other", T0, 10) == []


def test_retry_holds_the_lane_until_due(store: SqliteStore) -> None:
    """A row waiting for its retry blocks later rows of its session, not of others."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    first = store.due("slack", T0, 10)[0]
    store.mark_retry(first.id, T0 + timedelta(seconds=30), "HTTP 503")
    assert [r.event.id for r in store.due("slack", T0, 10)] == ["e3"]
    assert store.next_due("slack") == T0
    later = store.due("slack", T0 + timedelta(seconds=31), 10)
    assert (later[0].event.id, later[0].attempts, later[0].last_error) == ("e1", 1, "HTTP 503")


def test_dead_letters_can_be_listed_retried_and_purged(store: SqliteStore) -> None:
    """Dead rows are kept with their error, can be queued again, or purged."""
    e = event()
    store.record_events([e], [(e, Route("r", "slack"))], T0)
    row = store.due("slack", T0, 1)[0]
    store.mark_dead(row.id, T0, "permanent failure: invalid_auth")
    dead = store.list_outbox(OutboxStatus.DEAD)
    assert [(d.id, d.last_error, d.attempts) for d in dead] == [
        (row.id, "permanent failure: invalid_auth", 1)
    ]
    assert store.due("slack", T0, 1) == []
    assert store.retry_dead(T0, [row.id + 100]) == 0
    assert store.retry_dead(T0) == 1
    assert store.due("slack", T0, 1)[0].attempts == 0
    store.mark_dead(row.id, T0, "again")
    assert store.purge(OutboxStatus.DEAD) == 1
    assert store.list_outbox() == []
    with pytest.raises(ValueError, match="cannot be purged"):
        store.purge(OutboxStatus.PENDING)


def test_state_survives_reopening(tmp_path: Path) -> None:
    """What was committed is there after a restart."""
    path = tmp_path / "s.db"
    first = SqliteStore(path)
    e = event()
    first.record("s1", snap(), [e], [(e, Route("r", "slack"))], T0)
    first.close()
    second = SqliteStore(path)
    assert second.load_state("s1") == snap()
    assert second.due("slack", T0, 5)[0].event == replace(e, sequence=1)
    assert second.counts()[OutboxStatus.PENDING] == 1
    assert second.integrity_ok()
    second.close()


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


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer version is not touched."""
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this"):
        SqliteStore(path)


def overwrite_body(store: SqliteStore, event_id: str, body: str) -> None:
    """Replace a stored event's JSON behind the store's back (old or damaged rows)."""
    db = sqlite3.connect(store.path)
    with db:
        db.execute("UPDATE events SET body=? WHERE id=?", (body, event_id))
    db.close()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{", "JSONDecodeError"),
        ("[]", "TypeError"),
        ('{"id": "e1"}', "KeyError: 'session'"),
        (
            '{"id": "e1", "type": "session.exploded", "occurred_at": 0, "session": null,'
            ' "data": {}}',
            "ValueError",
        ),
    ],
)
def test_a_row_whose_event_cannot_be_read_comes_back_unreadable(
    store: SqliteStore, body: str, reason: str
) -> None:
    """Loading never raises: the damaged row says why, the others load as usual."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    overwrite_body(store, "e1", body)
    due = store.due("hook", T0, 10)
    assert [type(r).__name__ for r in due] == ["UnreadableRow", "OutboxRow"]
    bad = due[0]
    assert isinstance(bad, UnreadableRow)
    assert (bad.event_id, bad.event_type, bad.session_id) == ("e1", "session.status_changed", "s1")
    assert bad.reason.startswith("stored event cannot be read: ")
    assert reason in bad.reason
    assert {r.id for r in store.list_outbox()} == {r.id for r in due} | {2}


def test_events_stored_before_text_was_made_safe_load_with_replacements(
    store: SqliteStore,
) -> None:
    """A stored lone surrogate (written before the fix) loads as U+FFFD, not as a crash later."""
    e = event(id="e1")
    store.record_events([e], [(e, Route("r", "hook"))], T0)
    db = sqlite3.connect(store.path)
    body = db.execute("SELECT body FROM events WHERE id='e1'").fetchone()[0]
    db.close()
    overwrite_body(store, "e1", body.replace("Refactor billing", "\\ud800 Refactor"))
    (row,) = store.due("hook", T0, 10)
    assert isinstance(row, OutboxRow)
    assert row.event.session is not None
    assert row.event.session.title == "\ufffd Refactor"


def test_stored_text_is_always_valid_utf8(store: SqliteStore) -> None:
    """Even text that skipped the entry check is stored encodable: no escaped lone surrogate."""
    e = event(id="e1", session=event().session.__class__(id="s1", title="\ud800 t"))
    store.record("s1", snap(title="\udc00 s"), [e], [(e, Route("r", "hook"))], T0)
    db = sqlite3.connect(store.path)
    bodies = [
        r[0] for r in db.execute("SELECT body FROM events UNION ALL SELECT state FROM sessions")
    ]
    db.close()
    assert len(bodies) == 2
    for body in bodies:
        json.dumps(json.loads(body), ensure_ascii=False).encode("utf-8")  # strict: raises if not
    loaded = store.load_state("s1")
    assert isinstance(loaded, Snapshot)
    assert loaded.title == "\ufffd s"


def test_a_store_for_marks_flushes_less(tmp_path: Path) -> None:
    """`durable=False` (the outbox worker's connection) commits with synchronous=NORMAL,
    on the same file, and sees what the durable connection recorded.
    """
    durable = SqliteStore(tmp_path / "state.db")
    marks = SqliteStore(tmp_path / "state.db", durable=False)
    try:
        assert marks._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert durable._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        e = event(id="e1", session=ref(id="s1"))
        durable.record_events([e], [(e, Route("r", "hook"))], T0)
        (row,) = marks.due("hook", T0, 10)
        marks.mark_delivered(row.id, T0, None)
        assert durable.counts()[OutboxStatus.DELIVERED] == 1
    finally:
        marks.close()
        durable.close()


def test_discovery_is_remembered_with_its_baselines_in_one_commit(tmp_path: Path) -> None:
    """First discovery time, discovered ids and baseline states survive a reopen."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    assert store.discovered() == Discovered(None, frozenset())
    baseline = Recorded(
        "s1", snap(), (event(id="hello"),), ((event(id="hello"), Route("r", "ops")),)
    )
    new_rows = store.record_discovery(T0, T0, ["s1", "s2"], [baseline])
    assert new_rows == 1
    store.record_discovery(T0 + timedelta(minutes=1), T0 + timedelta(hours=1), ["s3"], [])
    store.forget_discovered(["s2"])
    store.close()
    reopened = SqliteStore(path)
    try:
        found = reopened.discovered()
        assert found.first_at == T0  # only the first discovery sets it
        assert found.session_ids == {"s1", "s3"}
        assert reopened.load_states() == {"s1": snap()}
        assert reopened.counts()[OutboxStatus.PENDING] == 1
    finally:
        reopened.close()


def _sequences(store: SqliteStore, target: str = "hook") -> list[tuple[str, int]]:
    """(event id, sequence) of the pending rows of `target`, in outbox order."""
    rows = store.list_outbox(OutboxStatus.PENDING)
    return [
        (r.event.id, r.event.sequence)
        for r in reversed(rows)
        if isinstance(r, OutboxRow) and r.target == target
    ]


def test_each_session_numbers_its_events_in_the_order_they_are_recorded(
    store: SqliteStore,
) -> None:
    """Sequences start at 1 and increase per session; sessionless events count apart."""
    events = [*two_events(), event(EventType.API_RECOVERED, id="w1", session=None)]
    store.record("s1", snap(), events, [(e, Route("r", "hook")) for e in events], T0)
    assert _sequences(store) == [("e1", 1), ("e2", 2), ("e3", 1), ("w1", 1)]


def test_a_transition_recorded_again_keeps_its_sequence(store: SqliteStore) -> None:
    """Recording the same event twice neither renumbers it nor uses up a number."""
    first, again = event(id="e1"), event(EventType.ARCHIVED, id="e2")
    store.record("s1", snap(), [first], [(first, Route("r", "hook"))], T0)
    store.record("s1", snap(), [first, again], [(again, Route("r", "hook"))], T0)
    assert _sequences(store) == [("e1", 1), ("e2", 2)]


def test_an_event_is_numbered_when_it_is_first_routed_not_when_stored(
    store: SqliteStore,
) -> None:
    """An event that waited to settle is numbered after those sent meanwhile, so each
    target gets a session's events in sequence order."""
    settling, meanwhile = event(id="e1"), event(EventType.ARCHIVED, id="e2")
    store.record("s1", snap(), [settling], [], T0)
    store.record("s1", snap(), [meanwhile], [(meanwhile, Route("r", "hook"))], T0)
    store.record_events([settling], [(settling, Route("r", "hook"))], T0)
    assert _sequences(store) == [("e2", 1), ("e1", 2)]
    assert [e.sequence for e in store.recent_events("s1")] == [2, 1]


def test_sequences_keep_increasing_across_restarts(tmp_path: Path) -> None:
    """A reopened store goes on from the highest sequence each session had."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.record("s1", snap(), [event(id="e1")], [(event(id="e1"), Route("r", "hook"))], T0)
    store.close()
    store = SqliteStore(path)
    later_event = event(EventType.ARCHIVED, id="e2")
    store.record("s1", snap(), [later_event], [(later_event, Route("r", "hook"))], T0)
    assert _sequences(store) == [("e1", 1), ("e2", 2)]
    assert [e.sequence for e in store.recent_events("s1")] == [1, 2]
    store.close()


def test_a_database_from_before_sequences_numbers_its_stored_events(tmp_path: Path) -> None:
    """Events stored by an older build get sequences in the order they were recorded."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    events = two_events()
    store.record("s1", snap(), events, [(e, Route("r", "hook")) for e in events], T0)
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE events DROP COLUMN sequence")
    db.execute("DELETE FROM sequences")
    db.commit()
    db.close()
    store = SqliteStore(path)
    assert _sequences(store) == [("e1", 1), ("e2", 2), ("e3", 1)]
    newer = event(EventType.DELETED, id="e4")
    store.record("s1", snap(), [newer], [(newer, Route("r", "hook"))], T0)
    assert _sequences(store)[-1] == ("e4", 3)
    store.close()


def test_session_facts_round_trip_and_old_rows_lack_them(store: SqliteStore) -> None:
    """A session ref keeps its card facts; an event stored before them loads with None."""
    full = ref(
        created_at=T0 - timedelta(hours=1),
        message_count=7,
        active_ms=1234.5,
        usage=TokenUsage(1, 2, 3, 4, 5, 0.75),
        model="m",
    )
    stored = event(session=full)
    assert event_from_json(event_to_json(stored)) == stored
    old = json.loads(event_to_json(event()))
    for key in ("created_at", "message_count", "active_ms", "usage"):
        old["session"].pop(key, None)
    loaded = event_from_json(json.dumps(old))
    assert loaded.session is not None
    assert (loaded.session.created_at, loaded.session.usage, loaded.session.credits) == (
        None,
        None,
        None,
    )


def test_a_card_is_intended_then_recorded_with_its_rows(store: SqliteStore) -> None:
    """The intent commits before the post; the ts and the delivered rows commit together."""
    events = [event(id="e1"), event(EventType.ARCHIVED, id="e2")]
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    assert store.card("slack", "s1") is None
    lane = store.pending_lane("slack", "s1", 10)
    assert [r.id for r in lane] == [1, 2]
    store.intend_card(Card("slack", "s1", "C1", None, "m1", replaced_ts="0.1"), T0)
    intended = store.card("slack", "s1")
    assert intended == Card("slack", "s1", "C1", None, "m1", T0, "0.1")
    store.drop_card_intent("slack", "s1", T0)
    assert store.card("slack", "s1") == replace(intended, posting_since=None)
    store.intend_card(Card("slack", "s1", "C1", None, "m2"), T0)
    store.record_card("slack", "s1", "1.5", [1, 2], T0)
    assert store.card("slack", "s1") == Card("slack", "s1", "C1", "1.5", "m2")
    rows = store.list_outbox()
    assert {(r.status, r.id) for r in rows} == {
        (OutboxStatus.DELIVERED, 1),
        (OutboxStatus.DELIVERED, 2),
    }
    assert store.pending_lane("slack", "s1", 10) == []


def test_a_database_from_before_cards_opens_and_gets_the_table(tmp_path: Path) -> None:
    """An existing state file without a cards table keeps working and gains one."""
    path = tmp_path / "old.db"
    old = SqliteStore(path)
    old.record_events([event()], [(event(), Route("r", "slack"))], T0)
    old.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE cards")
    db.commit()
    db.close()
    reopened = SqliteStore(path)
    try:
        assert reopened.card("slack", "s1") is None
        assert len(reopened.pending_lane("slack", "s1", 10)) == 1
    finally:
        reopened.close()
