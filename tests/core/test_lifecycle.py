"""Lifecycle edges and conditions read off consecutive polls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0, later, snap
from watcher.core.lifecycle import (
    Track,
    advance,
    condition_since,
    track_from_dict,
    track_to_dict,
    usage_value,
)
from watcher.core.model import EventType, Gone, Snapshot, TokenUsage

RUNNING = snap()
IDLE_DONE = later(RUNNING, status="idle", completed_at=RUNNING.updated_at + timedelta(seconds=30))
IDLE_NO_DONE = later(RUNNING, status="idle")
PENDING = later(RUNNING, status="pending")


@pytest.mark.parametrize(
    ("before", "after", "edges"),
    [
        (RUNNING, IDLE_DONE, [EventType.FINISHED]),
        (RUNNING, IDLE_NO_DONE, [EventType.INTERRUPTED]),
        (IDLE_NO_DONE, later(IDLE_NO_DONE, status="running"), [EventType.STARTED]),
        (PENDING, later(PENDING, status="running"), [EventType.STARTED]),
        # A run that started and ended between two polls: idle, then idle with a new completedAt.
        (
            IDLE_NO_DONE,
            later(IDLE_NO_DONE, completed_at=IDLE_NO_DONE.updated_at + timedelta(seconds=5)),
            [EventType.FINISHED],
        ),
        (IDLE_DONE, later(IDLE_DONE, message_count=9), []),
        (RUNNING, later(RUNNING, message_count=9), []),
        (RUNNING, PENDING, []),
    ],
)
def test_edges_between_two_polls(before: Snapshot, after: Snapshot, edges: list[EventType]) -> None:
    """Each pair of snapshots reveals exactly the expected lifecycle edges."""
    track, _ = advance(None, None, before, T0)
    _, found = advance(track, before, after, T0 + timedelta(seconds=30))
    assert [e.type for e in found] == edges


def test_baseline_reveals_nothing() -> None:
    """A session seen for the first time is a baseline: no started, no finished."""
    track, edges = advance(None, None, IDLE_DONE, T0)
    assert edges == ()
    assert track.status == "idle"


def test_epoch_moves_on_status_change_and_new_completion_only() -> None:
    """Progress keeps the epoch; a status change or a new completedAt moves it."""
    track, _ = advance(None, None, RUNNING, T0)
    busy = later(RUNNING, message_count=10)
    track2, _ = advance(track, RUNNING, busy, T0 + timedelta(seconds=1))
    assert track2.epoch == track.epoch
    assert track2.progress_at == T0 + timedelta(seconds=1)
    track3, _ = advance(track2, busy, IDLE_DONE, T0 + timedelta(seconds=2))
    assert track3.epoch == track.epoch + 1


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        ("pending", EventType.WAITING, "status_since"),
        ("running", EventType.WAITING, None),
        ("running", EventType.LONG_RUNNING, "status_since"),
        ("running", EventType.STUCK, "progress_at"),
        ("idle", EventType.STUCK, None),
        ("idle", EventType.LONG_RUNNING, None),
    ],
)
def test_conditions_hold_from_the_right_moment(
    status: str, kind: EventType, expected: str | None
) -> None:
    """Waiting counts from pending, long-running from running, stuck from the last progress."""
    track = Track(status, T0, T0 + timedelta(minutes=5))
    since = condition_since(track, kind)
    assert since == (None if expected is None else getattr(track, expected))


def test_gone_ends_every_condition() -> None:
    """A 404 moves the epoch and no condition holds for a deleted session."""
    track, _ = advance(None, None, RUNNING, T0)
    gone, edges = advance(track, RUNNING, Gone("s1", RUNNING), T0 + timedelta(seconds=5))
    assert edges == ()
    assert gone.epoch == track.epoch + 1
    assert condition_since(gone, EventType.LONG_RUNNING) is None


def test_usage_values_and_track_round_trip() -> None:
    """Usage counters read with a computed total; a track survives serialisation."""
    usage = TokenUsage(1, 2, 3, 4, 5, 0.5)
    assert usage_value(snap(token_usage=usage), "total_tokens") == 15
    assert usage_value(snap(token_usage=usage), "factory_credits") == 0.5
    assert usage_value(snap(), "factory_credits") is None
    track = Track("running", T0, T0, 3, T0)
    assert track_from_dict(track_to_dict(track)) == track
