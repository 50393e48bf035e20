"""Per-state intervals, idle backoff, rescheduling, priorities and the budget check."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, snap
from watcher.core.cadence import (
    Priority,
    budget_need,
    budget_warnings,
    needs_reschedule,
    poll_cadence,
    poll_deadline,
    poll_priority,
)
from watcher.core.model import Gone, SessionState
from watcher.core.secret import Secret
from watcher.core.settings import (
    DiscoverSettings,
    FactorySettings,
    PollSettings,
    Settings,
    WatchedSession,
)

S = timedelta(seconds=1)
ADAPTIVE = PollSettings(
    interval=30 * S,
    running=5 * S,
    pending=10 * S,
    idle=30 * S,
    max_idle=600 * S,
    archived=3600 * S,
)
V1 = PollSettings(interval=30 * S)


@pytest.mark.parametrize(
    ("poll", "fixed", "state", "seconds_later", "expected"),
    [
        pytest.param(ADAPTIVE, None, None, 0, 30 * S, id="never-seen"),
        pytest.param(ADAPTIVE, None, snap(status="running"), 0, 5 * S, id="running"),
        pytest.param(ADAPTIVE, None, snap(status="pending"), 0, 10 * S, id="pending"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), 0, 30 * S, id="idle-just-changed"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), 59, 30 * S, id="idle-quiet-59s"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), 120, 60 * S, id="idle-quiet-2m"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), 900, 450 * S, id="idle-quiet-15m"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), 86400, 600 * S, id="idle-capped"),
        pytest.param(ADAPTIVE, None, snap(status="idle"), -50, 30 * S, id="clock-skew"),
        pytest.param(ADAPTIVE, None, snap(status="paused"), 900, 30 * S, id="unknown-status"),
        pytest.param(
            ADAPTIVE, None, snap(status="idle", archived_at="x"), 0, 3600 * S, id="archived"
        ),
        pytest.param(
            PollSettings(archived_off=True),
            None,
            snap(status="idle", archived_at="x"),
            0,
            None,
            id="archived-off",
        ),
        pytest.param(
            PollSettings(idle=10 * S, max_idle=100 * S),
            None,
            snap(status="idle", archived_at="x"),
            400,
            100 * S,
            id="archived-backs-off-like-idle",
        ),
        pytest.param(ADAPTIVE, None, Gone("s1"), 0, 600 * S, id="deleted"),
        pytest.param(ADAPTIVE, 7 * S, snap(status="running"), 0, 7 * S, id="fixed-running"),
        pytest.param(ADAPTIVE, 7 * S, snap(status="idle"), 9999, 7 * S, id="fixed-idle"),
        pytest.param(V1, None, snap(status="running"), 0, 30 * S, id="v1-running"),
        pytest.param(V1, None, snap(status="idle"), 9999, 30 * S, id="v1-idle-no-backoff"),
    ],
)
def test_poll_cadence(
    poll: PollSettings,
    fixed: timedelta | None,
    state: SessionState | None,
    seconds_later: int,
    expected: timedelta | None,
) -> None:
    """The interval follows the state; idle backs off with quiet time up to max_idle."""
    cadence = poll_cadence(poll, fixed, state, T0 + seconds_later * S)
    assert cadence.interval == expected
    assert cadence.reason


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        (30 * S, 5 * S, True),  # activity: faster at once
        (30 * S, 32 * S, False),  # slower within the tolerance
        (30 * S, 34 * S, True),
        (30 * S, 30 * S, False),
        (30 * S, None, True),  # stop
        (None, 30 * S, True),  # start
        (None, None, False),
    ],
)
def test_needs_reschedule(current: timedelta | None, new: timedelta | None, expected: bool) -> None:
    """Faster or on/off always; slower only past the tolerance."""
    assert needs_reschedule(current, new) is expected


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (snap(status="running"), Priority.RUNNING),
        (snap(status="pending"), Priority.PENDING),
        (snap(status="idle"), Priority.OTHER),
        (Gone("s1"), Priority.OTHER),
        (None, Priority.OTHER),
    ],
)
def test_running_sessions_come_first(state: SessionState | None, expected: int) -> None:
    """Between equal deadlines: running, then pending, then everything else."""
    assert poll_priority(state) == expected


@pytest.mark.parametrize(
    ("queued_at", "interval", "expected"),
    [(100.0, 5 * S, 105.0), (100.0, None, 130.0), (0.0, 600 * S, 600.0)],
)
def test_a_queued_poll_is_due_within_one_interval(
    queued_at: float, interval: timedelta | None, expected: float
) -> None:
    """Earliest deadline first: queued time plus the session's interval (default 30 s)."""
    assert poll_deadline(queued_at, interval, 30 * S) == expected


def _settings(
    budget: float, poll: PollSettings, *sessions: WatchedSession, discover: bool = False
) -> Settings:
    return Settings(
        factory=FactorySettings(api_key=Secret("fk-x"), max_requests_per_second=budget),
        state_path=Path("x.db"),
        poll=poll,
        sessions=sessions,
        discover=DiscoverSettings(interval=10 * S) if discover else None,
    )


def test_budget_need_counts_fixed_sessions_and_the_fastest_state() -> None:
    """Fixed sessions at their interval; the rest at the fastest state interval; list pages."""
    settings = _settings(
        1.2,
        ADAPTIVE,
        WatchedSession("a", interval=2 * S),
        WatchedSession("b"),
        WatchedSession("c"),
        discover=True,
    )
    need = budget_need(settings)
    assert need.fixed == pytest.approx(0.5)
    assert need.fastest == pytest.approx(0.5 + 0.2 + 0.2 + 0.1)
    assert not need.fixed_exceeds
    assert need.may_fall_behind is False
    assert budget_warnings(settings) == ()
    tight = _settings(0.5, ADAPTIVE, WatchedSession("a", interval=1 * S))
    assert budget_need(tight).fixed_exceeds
    [warning] = budget_warnings(tight)
    assert "need 1.00 requests/s" in warning
