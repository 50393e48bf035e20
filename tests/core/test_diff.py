"""Diffing session states into v1 events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0, later, ref, snap
from watcher.core.diff import diff_states, event_id, session_ref, state_changed
from watcher.core.lifecycle import RunStart
from watcher.core.model import EventType, Gone, SessionState, TokenUsage
from watcher.core.settings import WatchedSession

BASE = snap()
DONE = T0 + timedelta(minutes=1)

CASES: list[
    tuple[str, SessionState | None, SessionState, list[tuple[EventType, dict[str, object]]]]
] = [
    ("first sight", None, BASE, [(EventType.DISCOVERED, {})]),
    ("nothing changed", BASE, BASE, []),
    ("only updatedAt moved", BASE, later(BASE), []),
    (
        "running to idle",
        BASE,
        later(BASE, status="idle"),
        [(EventType.STATUS_CHANGED, {"from": "running", "to": "idle"})],
    ),
    (
        "unknown status",
        BASE,
        later(BASE, status="hibernating"),
        [(EventType.STATUS_CHANGED, {"from": "running", "to": "hibernating"})],
    ),
    (
        "completed appears with the status change and messages",
        BASE,
        later(BASE, status="idle", completed_at=DONE, message_count=5),
        [
            (EventType.STATUS_CHANGED, {"from": "running", "to": "idle"}),
            (EventType.COMPLETED, {"completed_at": DONE.isoformat(), "duration_s": 660.0}),
            (EventType.MESSAGES_ADDED, {"added": 2, "total": 5}),
        ],
    ),
    (
        "completedAt changes after a second run",
        snap(completed_at=DONE),
        later(snap(completed_at=DONE), completed_at=DONE + timedelta(hours=1)),
        [
            (
                EventType.COMPLETED,
                {"completed_at": (DONE + timedelta(hours=1)).isoformat(), "duration_s": 4260.0},
            )
        ],
    ),
    ("message count shrinking is not an event", BASE, later(BASE, message_count=1), []),
    (
        "archived",
        BASE,
        later(BASE, archived_at="2026-11-28T12:05:00Z"),
        [(EventType.ARCHIVED, {"archived_at": "2026-11-28T12:05:00Z"})],
    ),
    ("already archived stays quiet", snap(archived_at="a"), later(snap(archived_at="a")), []),
    ("deleted after being seen", BASE, Gone("s1", BASE), [(EventType.DELETED, {})]),
    ("404 for a session never seen", None, Gone("s1"), []),
    ("still gone", Gone("s1", BASE), Gone("s1", BASE), []),
    ("back after a 404", Gone("s1", BASE), BASE, [(EventType.DISCOVERED, {})]),
]


@pytest.mark.parametrize(
    ("name", "previous", "current", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_transitions(
    name: str,
    previous: SessionState | None,
    current: SessionState,
    expected: list[tuple[EventType, dict[str, object]]],
) -> None:
    """Each transition yields exactly the catalog events, in order, with their data."""
    events = diff_states(previous, current, ref(), T0)
    # The run summary of a completion has tests of its own.
    shown = [(e.type, {k: v for k, v in e.data.items() if k != "run"}) for e in events]
    assert shown == expected
    assert all(e.session == ref() for e in events)


def test_same_transition_has_the_same_id() -> None:
    """Seeing one transition twice (a crash, two replicas) gives the same event id."""
    current = later(BASE, status="idle")
    first = diff_states(BASE, current, ref(), T0)
    second = diff_states(BASE, current, ref(), T0 + timedelta(hours=1))
    assert [e.id for e in first] == [e.id for e in second]


def test_a_later_identical_transition_has_a_new_id() -> None:
    """A second run going running -> idle again is a new event."""
    first = diff_states(BASE, later(BASE, status="idle"), ref(), T0)
    rerun = later(BASE, 600)
    second = diff_states(rerun, later(rerun, status="idle"), ref(), T0)
    assert first[0].id != second[0].id


def test_event_ids_differ_by_session_and_type() -> None:
    """Ids are namespaced by session and event type."""
    cause = {"updated_at": 1}
    ids = {
        event_id("a", EventType.ARCHIVED, cause),
        event_id("b", EventType.ARCHIVED, cause),
        event_id("a", EventType.DELETED, cause),
    }
    assert len(ids) == 3


def test_occurred_at_comes_from_the_snapshot_or_now() -> None:
    """Snapshot events carry the API's time; a deletion is dated when it was seen."""
    current = later(BASE, status="idle")
    assert diff_states(BASE, current, ref(), T0)[0].occurred_at == current.updated_at
    now = T0 + timedelta(hours=2)
    assert diff_states(BASE, Gone("s1", BASE), ref(), now)[0].occurred_at == now


@pytest.mark.parametrize(
    ("previous", "current", "changed"),
    [
        (None, BASE, True),
        (BASE, BASE, False),
        (BASE, later(BASE), True),
        (Gone("s1", BASE), Gone("s1", BASE), False),
    ],
)
def test_state_changed(previous: SessionState | None, current: SessionState, changed: bool) -> None:
    """Only a different state needs storing."""
    assert state_changed(previous, current) is changed


def test_session_ref_combines_config_and_snapshot() -> None:
    """The reference carries the configured name and labels, the title and a link."""
    watched = WatchedSession(id="s1", name="nightly", labels={"team": "platform"})
    made = session_ref(watched, BASE, "https://app.factory.ai/sessions/{id}")
    assert made == ref(
        url="https://app.factory.ai/sessions/s1",
        created_at=BASE.created_at,
        message_count=BASE.message_count,
    )
    bare = session_ref(WatchedSession(id="s1"), None, None)
    assert (bare.title, bare.status, bare.url, bare.display_name) == ("", "", None, "s1")


def test_snapshot_is_frozen() -> None:
    """Snapshots are values."""
    with pytest.raises(AttributeError):
        BASE.status = "idle"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("run_start", "expected"),
    [
        # The lifecycle's baseline from the run's start: the whole run is counted.
        (
            RunStart(T0 - timedelta(minutes=5), 1, 1_000.0, TokenUsage(100, 10, 5, 5, 0, 1.0)),
            {"duration_s": 360, "messages_added": 4, "active_s": 9, "credits": 2},
        ),
        # No baseline: a later run happened between two polls; the previous snapshot is it.
        (None, {"duration_s": None, "messages_added": 2, "active_s": 5, "credits": 1.5}),
    ],
)
def test_completion_carries_the_run_summary(
    run_start: RunStart | None, expected: dict[str, object]
) -> None:
    """session.completed tells what the run used, from the baseline the caller gives."""
    before = snap(
        status="idle",
        completed_at=T0 - timedelta(minutes=8),
        assistant_active_ms=5_000,
        token_usage=TokenUsage(200, 20, 0, 0, 0, 1.5),
    )
    after = later(
        before,
        status="idle",
        completed_at=DONE,
        message_count=5,
        assistant_active_ms=10_000,
        token_usage=TokenUsage(300, 30, 0, 10, 0, 3.0),
    )
    events = diff_states(before, after, ref(), T0, run_start=run_start)
    (completed,) = [e for e in events if e.type is EventType.COMPLETED]
    run = completed.data["run"]
    assert {key: run[key] for key in expected} == expected


def test_a_first_run_between_polls_counts_from_creation() -> None:
    """A session that never completed before: its first run began when it was created."""
    before = snap(status="pending", message_count=1, created_at=T0 - timedelta(minutes=10))
    after = later(
        before,
        status="idle",
        completed_at=DONE,
        message_count=6,
        assistant_active_ms=30_000,
        token_usage=TokenUsage(50, 5, 0, 0, 0, 0.5),
    )
    (completed,) = [
        e for e in diff_states(before, after, ref(), T0) if e.type is EventType.COMPLETED
    ]
    run = completed.data["run"]
    assert (run["duration_s"], run["messages_added"], run["active_s"], run["credits"]) == (
        660,
        6,
        30,
        0.5,
    )


def test_a_session_seen_again_after_it_changed_is_a_new_discovery() -> None:
    """Discovered again (after retention forgot it, or a 404) once it changed: a new id."""
    first = diff_states(None, BASE, ref(), T0)
    again = diff_states(None, later(BASE, 3600), ref(), T0 + timedelta(days=40))
    assert [e.type for e in first + again] == [EventType.DISCOVERED, EventType.DISCOVERED]
    assert first[0].id != again[0].id
    assert diff_states(None, BASE, ref(), T0 + timedelta(days=1))[0].id == first[0].id
