"""Quiet-hours windows: midnight, weekdays, time zones and DST, read as a person would."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from watcher.core.quiet import active_window
from watcher.core.settings import QuietHours

NIGHT = QuietHours("night", time(22), time(7), "Europe/Berlin", frozenset(range(5)))
LUNCH = QuietHours("lunch", time(12), time(13), "America/New_York")


def utc(text: str) -> datetime:
    """An aware UTC datetime from `YYYY-MM-DD HH:MM`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("quiet", "now", "window"),
    [
        # Winter, Berlin is UTC+1: Monday 22:00 local = 21:00 UTC, Tuesday 07:00 = 06:00 UTC.
        (NIGHT, "2026-11-30 20:59", None),
        (NIGHT, "2026-11-30 21:00", ("2026-11-30 21:00", "2026-12-01 06:00")),
        (NIGHT, "2026-12-01 05:59", ("2026-11-30 21:00", "2026-12-01 06:00")),
        (NIGHT, "2026-12-01 06:00", None),
        # Friday night's window runs into Saturday morning; Saturday night has none.
        (NIGHT, "2026-12-05 05:00", ("2026-12-04 21:00", "2026-12-05 06:00")),
        (NIGHT, "2026-12-05 22:00", None),
        (NIGHT, "2026-12-06 23:00", None),
        # Summer, Berlin is UTC+2.
        (NIGHT, "2026-07-06 20:30", ("2026-07-06 20:00", "2026-07-07 05:00")),
        # Spring forward (Sun 29 Mar 2026 -> Mon): Friday 27 Mar 22:00 CET to Sat 07:00 CET.
        (NIGHT, "2026-03-27 21:00", ("2026-03-27 21:00", "2026-03-28 06:00")),
        # The window starting Thursday 26 Mar is CET; the one starting Monday 30 Mar is CEST.
        (NIGHT, "2026-03-30 20:00", ("2026-03-30 20:00", "2026-03-31 05:00")),
        # Fall back (Sun 25 Oct 2026): Sunday has no window; Friday 23 Oct starts in CEST and
        # its end on Saturday is CEST too; Monday 26 Oct is CET.
        (NIGHT, "2026-10-23 20:00", ("2026-10-23 20:00", "2026-10-24 05:00")),
        (NIGHT, "2026-10-26 21:30", ("2026-10-26 21:00", "2026-10-27 06:00")),
        # A same-day window in New York, across its DST change (8 Mar 2026).
        (LUNCH, "2026-03-06 17:30", ("2026-03-06 17:00", "2026-03-06 18:00")),
        (LUNCH, "2026-03-09 16:30", ("2026-03-09 16:00", "2026-03-09 17:00")),
        (LUNCH, "2026-03-09 17:00", None),
    ],
)
def test_window_boundaries(quiet: QuietHours, now: str, window: tuple[str, str] | None) -> None:
    """The window containing `now`, start inclusive and end exclusive, in UTC."""
    found = active_window(quiet, utc(now))
    assert (None if found is None else (found.start, found.end)) == (
        None if window is None else (utc(window[0]), utc(window[1]))
    )


def test_a_window_crossing_the_spring_forward_night_is_an_hour_shorter() -> None:
    """22:00-07:00 over the night clocks go forward lasts 8 real hours, not 9."""
    every_day = QuietHours("n", time(22), time(7), "Europe/Berlin")
    found = active_window(every_day, utc("2026-03-28 23:00"))
    assert found is not None
    assert (found.start, found.end) == (utc("2026-03-28 21:00"), utc("2026-03-29 05:00"))


def test_a_start_inside_the_dst_gap_begins_after_it() -> None:
    """02:30 does not exist on the spring-forward night in Berlin; the window begins at 03:30."""
    gap = QuietHours("g", time(2, 30), time(4), "Europe/Berlin")
    found = active_window(gap, utc("2026-03-29 01:45"))
    assert found is not None
    assert found.start == utc("2026-03-29 01:30")
    assert found.end == utc("2026-03-29 02:00")
