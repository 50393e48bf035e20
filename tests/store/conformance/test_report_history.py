"""Conformance: what a scheduled report reads from the store (any backend)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.backends import Backend
from watcher.core.lifecycle import Track
from watcher.core.model import Event, EventType, Gone
from watcher.core.report import RecordedEvent
from watcher.core.rulestate import Evaluation, SessionMemory
from watcher.store import Store

M = timedelta(minutes=1)
START, END = T0 + 10 * M, T0 + 20 * M


def _changed(eid: str, sid: str, to: str, at_minute: int) -> Event:
    return event(
        id=eid,
        session=ref(id=sid),
        occurred_at=T0 + at_minute * M,
        data={"from": "idle" if to == "running" else "running", "to": to},
    )


def _fill(store: Store) -> None:
    """s1: a run from minute 5 ending at 15; s2: a discovery at 20, one at 21; s3: no events."""
    store.record("s1", snap(), [_changed("e1", "s1", "running", 5)], [], T0 + 5 * M)
    store.record(
        "s1",
        snap(message_count=4),
        [event(EventType.MESSAGES_ADDED, id="e2", session=ref(active_ms=1000.0))],
        [],
        START,
    )
    store.record("s1", snap(status="idle"), [_changed("e3", "s1", "idle", 15)], [], T0 + 15 * M)
    s2 = snap(session_id="s2")
    store.record("s2", s2, [event(EventType.DISCOVERED, id="e4", session=ref(id="s2"))], [], END)
    store.record(
        "s2",
        snap(session_id="s2", message_count=9),
        [event(EventType.MESSAGES_ADDED, id="e5", session=ref(id="s2"))],
        [],
        END + M,
    )
    store.record("s3", snap(session_id="s3"), [], [], T0 + 12 * M)


def test_history_holds_the_events_recorded_in_the_half_open_window(store: Store) -> None:
    """Events with start < recorded_at <= end, in the order recorded, with that time."""
    _fill(store)
    history = store.report_history(START, END)
    assert [(r.event.id, r.recorded_at) for r in history.events] == [
        ("e3", T0 + 15 * M),
        ("e4", END),
    ]
    assert all(isinstance(r, RecordedEvent) for r in history.events)
    assert history.events[0].event.data == {"from": "running", "to": "idle"}


def test_history_gives_baselines_and_run_starts_at_the_window_start(store: Store) -> None:
    """Per session in the window: its latest event at or before the start, its run's start."""
    _fill(store)
    history = store.report_history(START, END)
    assert set(history.baselines) == {"s1"}
    assert history.baselines["s1"].id == "e2"
    assert history.baselines["s1"].session is not None
    assert history.baselines["s1"].session.active_ms == 1000.0
    assert history.run_starts == {"s1": T0 + 5 * M}


def test_history_lists_every_stored_session_as_it_is_now(store: Store) -> None:
    """State, track, latest ref, watch mark and when it was stored, for each session."""
    _fill(store)
    track = Track("idle", T0 + 15 * M, T0 + 15 * M, epoch=2)
    store.record_evaluation("s1", Evaluation(SessionMemory(track)), T0 + 15 * M)
    store.note_watched(["s1", "s3"], T0 + 30 * M)
    store.record("s4", Gone("s4", None), [], [], T0)
    sessions = {s.session_id: s for s in store.report_history(START, END).sessions}
    assert set(sessions) == {"s1", "s2", "s3", "s4"}
    s1, s2, s3 = sessions["s1"], sessions["s2"], sessions["s3"]
    assert s1.state == snap(status="idle")
    assert s1.track == track
    assert s1.ref is not None
    assert s1.ref.name == "nightly"
    assert s1.stored_at == T0 + 15 * M
    assert s1.unwatched_since is None
    assert s2.unwatched_since == T0 + 30 * M
    assert s2.state == snap(session_id="s2", message_count=9)
    assert s3.ref is None
    assert s3.track is None
    assert sessions["s4"].state == Gone("s4", None)


@pytest.mark.parametrize("damage", ["state", "memory", "event"])
def test_a_damaged_row_does_not_stop_the_history(
    store: Store, backend: Backend, damage: str
) -> None:
    """An unreadable state or track reads as unknown, an unreadable event is left out."""
    _fill(store)
    store.record_evaluation("s1", Evaluation(SessionMemory(Track("idle", T0, T0))), T0 + 15 * M)
    if damage == "state":
        backend.overwrite_state("s1", "{not json")
    elif damage == "memory":
        backend.overwrite_memory("s1", "[]")
    else:
        backend.overwrite_event_body("e3", "{")
    history = store.report_history(START, END)
    s1 = next(s for s in history.sessions if s.session_id == "s1")
    assert (s1.state is None) is (damage == "state")
    assert (s1.track is None) is (damage == "memory")
    ids = [r.event.id for r in history.events]
    assert ids == (["e4"] if damage == "event" else ["e3", "e4"])


@pytest.mark.parametrize(
    ("damaged", "expected"),
    [
        ("{", {}),  # not JSON
        ("[1, 2]", {}),  # JSON, not an event document
        ('{"data": "running"}', {}),  # an object whose data is not one
    ],
)
def test_a_damaged_run_start_before_the_window_starts_no_run(
    store: Store, backend: Backend, damaged: str, expected: dict[str, object]
) -> None:
    """A status change to running whose stored body is damaged is passed over, not raised."""
    _fill(store)
    backend.overwrite_event_body("e1", damaged)
    history = store.report_history(START, END)
    assert history.run_starts == expected
    assert [r.event.id for r in history.events] == ["e3", "e4"]


def test_the_latest_run_start_is_found_behind_many_other_status_changes(store: Store) -> None:
    """A run start older than any number of later status changes is still the one found."""
    store.record("s1", snap(), [_changed("e0", "s1", "running", 1)], [], T0 + M)
    later = [
        event(
            id=f"w{n}",
            session=ref(id="s1"),
            occurred_at=T0 + 2 * M,
            data={"from": "running", "to": "waiting" if n % 2 else "blocked"},
        )
        for n in range(11)
    ]
    store.record("s1", snap(), later, [], T0 + 2 * M)
    store.record("s1", snap(status="idle"), [_changed("e9", "s1", "idle", 15)], [], T0 + 15 * M)
    history = store.report_history(START, END)
    assert history.run_starts == {"s1": T0 + M}
    assert history.baselines["s1"].id == "w10"


def test_a_damaged_latest_body_reads_the_session_without_its_link(
    store: Store, backend: Backend
) -> None:
    """A session whose latest stored event is damaged is still listed, with no ref."""
    _fill(store)
    backend.overwrite_event_body("e5", "not json")
    sessions = {s.session_id: s for s in store.report_history(START, END).sessions}
    assert sessions["s2"].ref is None
    assert sessions["s2"].state == snap(session_id="s2", message_count=9)
