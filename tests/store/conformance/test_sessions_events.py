"""Conformance: session states, discovery, events and their sequences (any backend)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.backends import Backend
from watcher.core.model import Event, EventType, Gone, Snapshot
from watcher.core.rules import Route
from watcher.store import Discovered, OutboxRow, OutboxStatus, Recorded, Store
from watcher.store.rows import StoredStates


def two_events() -> list[Event]:
    """Two events on s1 and one on s2."""
    return [
        event(id="e1"),
        event(EventType.ARCHIVED, id="e2"),
        event(id="e3", session=ref(id="s2")),
    ]


def sequences(store: Store, target: str = "hook") -> list[tuple[str, int]]:
    """(event id, sequence) of the pending rows of `target`, in outbox order."""
    rows = store.list_outbox(OutboxStatus.PENDING)
    return [
        (r.event.id, r.event.sequence)
        for r in reversed(rows)
        if isinstance(r, OutboxRow) and r.target == target
    ]


def test_state_round_trip(store: Store) -> None:
    """Snapshots and Gone states come back as stored."""
    assert store.load_state("s1") is None
    store.record("s1", snap(), [], [], T0)
    assert store.load_state("s1") == snap()
    store.record("s1", Gone("s1", snap()), [], [], T0)
    assert store.load_state("s1") == Gone("s1", snap())


def test_load_states_reads_only_the_sessions_asked_for(store: Store) -> None:
    """The stored states of the ids given, whatever else is stored; unknown ids are absent."""
    store.record("s1", snap(), [], [], T0)
    store.record("s2", Gone("s2", snap(session_id="s2", status="idle")), [], [], T0)
    store.record("s3", Gone("s3", None), [], [], T0)
    store.record("s4", snap(session_id="s4"), [], [], T0)
    assert store.load_states(["s1", "s2", "s3", "nope"]) == StoredStates(
        {
            "s1": snap(),
            "s2": Gone("s2", snap(session_id="s2", status="idle")),
            "s3": Gone("s3", None),
        }
    )
    assert store.load_states([]) == StoredStates({})


@pytest.mark.parametrize(
    "damage",
    ["{not json", '{"gone": false}', '"a string"', ""],
    ids=["not-json", "no-snapshot", "not-an-object", "empty"],
)
def test_an_unreadable_state_is_returned_with_its_reason_and_set_aside(
    store: Store, backend: Backend, damage: str
) -> None:
    """A damaged row never raises: it is named with a reason; set aside, the session is new."""
    store.record("s1", snap(), [], [], T0)
    store.record("s2", snap(session_id="s2"), [], [], T0)
    backend.overwrite_state("s1", damage)
    assert store.load_state("s1") is None  # a poll's read: logged, the session starts afresh
    loaded = store.load_states(["s1", "s2"])
    assert loaded.states == {"s2": snap(session_id="s2")}
    [unreadable] = loaded.unreadable
    assert unreadable.session_id == "s1"
    assert unreadable.reason.startswith("stored state cannot be read: ")
    store.set_aside_states(loaded.unreadable, T0)
    assert store.load_state("s1") is None
    assert store.load_states(["s1", "s2"]) == StoredStates({"s2": snap(session_id="s2")})
    assert backend.set_aside_states() == [("s1", damage, unreadable.reason)]
    store.record("s1", snap(), [], [], T0)  # the next poll's baseline is stored as usual
    assert store.load_states(["s1"]) == StoredStates({"s1": snap()})


def test_record_is_idempotent(store: Store) -> None:
    """Recording the same events and routes twice queues each notification once."""
    e = event()
    routes = [(e, Route("r", "slack")), (e, Route("r", "hook"))]
    assert store.record("s1", snap(), [e], routes, T0) == 2
    assert store.record("s1", snap(), [e], routes, T0) == 0
    assert store.counts()[OutboxStatus.PENDING] == 2


def test_state_survives_reopening(backend: Backend) -> None:
    """What was committed is there after a restart."""
    first = backend.open()
    e = event()
    first.record("s1", snap(), [e], [(e, Route("r", "slack"))], T0)
    first.close()
    second = backend.open()
    try:
        assert second.load_state("s1") == snap()
        row = second.due("slack", T0, 5)[0]
        assert isinstance(row, OutboxRow)
        assert row.event == replace(e, sequence=1)
        assert second.counts()[OutboxStatus.PENDING] == 1
        assert second.integrity_ok()
    finally:
        second.close()


def test_discovery_is_remembered_with_its_baselines_in_one_commit(backend: Backend) -> None:
    """First discovery time, discovered ids and baseline states survive a reopen."""
    store = backend.open()
    assert store.discovered() == Discovered(None, frozenset())
    baseline = Recorded(
        "s1", snap(), (event(id="hello"),), ((event(id="hello"), Route("r", "ops")),)
    )
    new_rows = store.record_discovery(T0, T0, ["s1", "s2"], [baseline])
    assert new_rows == 1
    store.record_discovery(T0 + timedelta(minutes=1), T0 + timedelta(hours=1), ["s3"], [])
    store.forget_discovered(["s2"])
    store.close()
    reopened = backend.open()
    try:
        found = reopened.discovered()
        assert found.first_at == T0  # only the first discovery sets it
        assert found.session_ids == {"s1", "s3"}
        assert reopened.load_states(["s1", "s2", "s3"]) == StoredStates({"s1": snap()})
        assert reopened.counts()[OutboxStatus.PENDING] == 1
    finally:
        reopened.close()


def test_stored_text_is_always_valid_utf8(store: Store, backend: Backend) -> None:
    """Even text that skipped the entry check is stored encodable: no escaped lone surrogate."""
    e = event(id="e1", session=ref(id="s1", title="\ud800 t"))
    store.record("s1", snap(title="\udc00 s"), [e], [(e, Route("r", "hook"))], T0)
    documents = backend.stored_documents()
    assert len(documents) == 2
    for document in documents:
        json.dumps(json.loads(document), ensure_ascii=False).encode("utf-8")  # strict: raises
    loaded = store.load_state("s1")
    assert isinstance(loaded, Snapshot)
    assert loaded.title == "\ufffd s"


def test_events_stored_before_text_was_made_safe_load_with_replacements(
    store: Store, backend: Backend
) -> None:
    """A stored lone surrogate (written before the fix) loads as U+FFFD, not as a crash later."""
    e = event(id="e1")
    store.record_events([e], [(e, Route("r", "hook"))], T0)
    body = backend.event_body("e1")
    backend.overwrite_event_body("e1", body.replace("Refactor billing", "\\ud800 Refactor"))
    (row,) = store.due("hook", T0, 10)
    assert isinstance(row, OutboxRow)
    assert row.event.session is not None
    assert row.event.session.title == "\ufffd Refactor"


def test_each_session_numbers_its_events_in_the_order_they_are_recorded(store: Store) -> None:
    """Sequences start at 1 and increase per session; sessionless events count apart."""
    events = [*two_events(), event(EventType.API_RECOVERED, id="w1", session=None)]
    store.record("s1", snap(), events, [(e, Route("r", "hook")) for e in events], T0)
    assert sequences(store) == [("e1", 1), ("e2", 2), ("e3", 1), ("w1", 1)]


def test_a_transition_recorded_again_keeps_its_sequence(store: Store) -> None:
    """Recording the same event twice neither renumbers it nor uses up a number."""
    first, again = event(id="e1"), event(EventType.ARCHIVED, id="e2")
    store.record("s1", snap(), [first], [(first, Route("r", "hook"))], T0)
    store.record("s1", snap(), [first, again], [(again, Route("r", "hook"))], T0)
    assert sequences(store) == [("e1", 1), ("e2", 2)]


def test_an_event_is_numbered_when_it_is_first_routed_not_when_stored(store: Store) -> None:
    """An event that waited to settle is numbered after those sent meanwhile, so each
    target gets a session's events in sequence order."""
    settling, meanwhile = event(id="e1"), event(EventType.ARCHIVED, id="e2")
    store.record("s1", snap(), [settling], [], T0)
    store.record("s1", snap(), [meanwhile], [(meanwhile, Route("r", "hook"))], T0)
    store.record_events([settling], [(settling, Route("r", "hook"))], T0)
    assert sequences(store) == [("e2", 1), ("e1", 2)]
    assert [e.sequence for e in store.recent_events("s1")] == [2, 1]


def test_sequences_keep_increasing_across_restarts(backend: Backend) -> None:
    """A reopened store goes on from the highest sequence each session had."""
    store = backend.open()
    store.record("s1", snap(), [event(id="e1")], [(event(id="e1"), Route("r", "hook"))], T0)
    store.close()
    store = backend.open()
    try:
        later_event = event(EventType.ARCHIVED, id="e2")
        store.record("s1", snap(), [later_event], [(later_event, Route("r", "hook"))], T0)
        assert sequences(store) == [("e1", 1), ("e2", 2)]
        assert [e.sequence for e in store.recent_events("s1")] == [1, 2]
    finally:
        store.close()


def test_recent_events_are_the_latest_of_one_session_oldest_first(store: Store) -> None:
    """`limit` keeps the newest; events of other sessions are not listed."""
    events = [event(id=f"e{n}", occurred_at=T0 + timedelta(seconds=n)) for n in range(5)]
    for n, e in enumerate(events):
        store.record_events([e], [], T0 + timedelta(seconds=n))
    store.record_events([event(id="other", session=ref(id="s2"))], [], T0)
    assert [e.id for e in store.recent_events("s1", limit=3)] == ["e2", "e3", "e4"]
    assert [e.sequence for e in store.recent_events("s1")] == [0] * 5  # never routed
    assert store.recent_events("nobody") == []


def test_an_unreadable_recent_event_is_left_out_never_raised(
    store: Store, backend: Backend
) -> None:
    """`explain`'s read: a damaged event body drops that event only; the others still load."""
    for n in range(3):
        store.record_events([event(id=f"e{n}")], [], T0 + timedelta(seconds=n))
    backend.overwrite_event_body("e1", "{not json")
    assert [e.id for e in store.recent_events("s1")] == ["e0", "e2"]
