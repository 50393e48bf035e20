"""Poll timing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from watcher.core.schedule import PollTiming, poll_timing


@pytest.mark.parametrize(
    ("interval", "jitter", "phase", "expected"),
    [
        (30, 0.1, 0.0, PollTiming(28.5, 3.0, 0.0)),
        (30, 0.1, 0.5, PollTiming(28.5, 3.0, 15.0)),
        (10, 0.0, 0.99, PollTiming(10.0, 0.0, 9.9)),
        (1, 0.5, 0.25, PollTiming(0.75, 0.5, 0.25)),
    ],
)
def test_poll_timing(interval: float, jitter: float, phase: float, expected: PollTiming) -> None:
    """The mean period stays the interval; the first poll lands at its phase of one interval."""
    timing = poll_timing(timedelta(seconds=interval), jitter, phase)
    assert timing.period == pytest.approx(expected.period)
    assert timing.jitter == pytest.approx(expected.jitter)
    assert timing.first_delay == pytest.approx(expected.first_delay)
    assert timing.period + timing.jitter / 2 == pytest.approx(interval)
