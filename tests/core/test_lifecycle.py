"""Lifecycle edges and conditions read off consecutive polls."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.core.factories import T0, later, snap
from watcher.core.lifecycle import (
    Edge,
    RunStart,
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


def _usage(tokens: float, credits: float | None = None) -> TokenUsage:
    """Usage with `tokens` each of input and output, a tenth as cache reads."""
    return TokenUsage(tokens, tokens, 0, tokens / 10, 0, credits)


IDLE_BEFORE = snap(
    status="idle",
    completed_at=T0 - timedelta(minutes=5),
    message_count=10,
    assistant_active_ms=60_000,
    token_usage=_usage(1000, 2.0),
)
STARTED = later(IDLE_BEFORE, 60, status="running", message_count=11, token_usage=_usage(1200, 2.5))
ENDED_AT = STARTED.updated_at + timedelta(minutes=10)
FINISHED_RUN = replace(
    STARTED,
    status="idle",
    updated_at=ENDED_AT,
    completed_at=ENDED_AT,
    message_count=17,
    assistant_active_ms=60_000 + 240_000,
    token_usage=_usage(3000, 6.0),
)
INTERRUPTED_RUN = replace(FINISHED_RUN, completed_at=IDLE_BEFORE.completed_at)
BETWEEN_POLLS = later(
    IDLE_BEFORE,
    600,
    completed_at=IDLE_BEFORE.updated_at + timedelta(minutes=9),
    message_count=14,
    assistant_active_ms=90_000,
    token_usage=_usage(1500, 3.0),
)
FRESH = snap(
    status="pending",
    message_count=1,
    created_at=T0 - timedelta(seconds=20),
    assistant_active_ms=0,
    token_usage=_usage(0, 0.0),
)
FRESH_DONE = replace(
    FRESH,
    status="idle",
    updated_at=T0 + timedelta(minutes=2),
    completed_at=T0 + timedelta(minutes=2),
    message_count=6,
    assistant_active_ms=70_000,
    token_usage=_usage(800, 1.25),
)

RUN_CASES = [
    (
        "a run seen starting and finishing",
        [IDLE_BEFORE, STARTED, FINISHED_RUN],
        EventType.FINISHED,
        {
            "duration_s": 600,
            "active_s": 240,
            "active_share": 0.4,
            "tokens": {"input": 2000, "output": 2000, "cache": 200},
            "credits": 4,
            "messages_added": 7,
            "partial": False,
        },
    ),
    (
        "an interrupted run ends when the API last updated it",
        [IDLE_BEFORE, STARTED, INTERRUPTED_RUN],
        EventType.INTERRUPTED,
        {
            "duration_s": 600,
            "active_s": 240,
            "active_share": 0.4,
            "tokens": {"input": 2000, "output": 2000, "cache": 200},
            "credits": 4,
            "messages_added": 7,
            "partial": False,
        },
    ),
    (
        "a run entirely between two polls counts from the previous snapshot",
        [IDLE_BEFORE, BETWEEN_POLLS],
        EventType.FINISHED,
        {
            "duration_s": None,
            "active_s": 30,
            "active_share": None,
            "tokens": {"input": 500, "output": 500, "cache": 50},
            "credits": 1,
            "messages_added": 4,
            "partial": False,
        },
    ),
    (
        "a new session's first run counts from its creation",
        [FRESH, FRESH_DONE],
        EventType.FINISHED,
        {
            "duration_s": 140,
            "active_s": 70,
            "active_share": 0.5,
            "tokens": {"input": 800, "output": 800, "cache": 80},
            "credits": 1.25,
            "messages_added": 6,
            "partial": False,
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "polls", "kind", "expected"), RUN_CASES, ids=[c[0] for c in RUN_CASES]
)
def test_run_summary_is_the_difference_from_the_runs_start(
    name: str, polls: list[Snapshot], kind: EventType, expected: dict[str, object]
) -> None:
    """The edge that ends a run carries what this run took, not the session's totals."""
    track, previous = None, None
    found: tuple[Edge, ...] = ()
    for i, current in enumerate(polls):
        track, found = advance(track, previous, current, T0 + timedelta(minutes=i))
        previous = current
    (end,) = [e for e in found if e.type is kind]
    run = dict(end.data["run"])
    for key in ("started_at", "ended_at"):
        run.pop(key)
    assert run == expected
    assert track is not None
    assert track.run is None


def test_run_baseline_is_kept_while_busy_and_survives_the_store() -> None:
    """The baseline taken when a run starts stays through progress and serialisation."""
    track, _ = advance(None, None, IDLE_BEFORE, T0)
    assert track.run is None
    track, _ = advance(track, IDLE_BEFORE, STARTED, T0 + timedelta(seconds=90))
    assert track.run == RunStart(
        STARTED.updated_at, 10, 60_000, IDLE_BEFORE.token_usage, partial=False
    )
    busy = later(STARTED, message_count=15)
    kept, _ = advance(track, STARTED, busy, T0 + timedelta(minutes=3))
    assert kept.run == track.run
    assert track_from_dict(track_to_dict(kept)) == kept
    legacy = {k: v for k, v in track_to_dict(kept).items() if k != "run"}
    assert track_from_dict(legacy).run is None


def test_first_seen_mid_run_is_partial() -> None:
    """A session first seen busy after earlier runs counts from that sight, marked partial."""
    track, _ = advance(None, None, STARTED, T0)
    assert track.run is not None
    assert track.run.partial
    assert track.run.started_at is None
    _, edges = advance(track, STARTED, FINISHED_RUN, T0 + timedelta(minutes=20))
    (finished,) = edges
    assert finished.data["run"]["partial"] is True
    assert finished.data["run"]["messages_added"] == 6
