"""When each session is polled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class PollTiming:
    """An interval job's shape: base period, added jitter and the first run's delay (seconds)."""

    period: float
    jitter: float
    first_delay: float


def poll_timing(interval: timedelta, jitter: float, phase: float) -> PollTiming:
    """Timing for a session polled every `interval` with `jitter` (a fraction), mean intact.

    The timetable adds uniform(0, jitter) to every period, so the base period is
    shortened by half the jitter to keep the mean at `interval`. The first poll
    comes at `phase` (drawn in [0, 1)) of one interval: thousands of sessions
    then fall due spread evenly instead of all at once, every period.
    """
    seconds = interval.total_seconds()
    spread = seconds * jitter
    return PollTiming(period=seconds - spread / 2, jitter=spread, first_delay=phase * seconds)
