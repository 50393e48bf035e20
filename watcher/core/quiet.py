"""Quiet hours: daily windows of local wall-clock time, with time zones and DST.

A window `22:00-07:00` that starts on a Friday ends on Saturday at 07:00
local time, however many real hours that is across a DST change. `days`
names the weekdays on which windows start. A time that falls in a DST gap
is read with the offset from before the change (02:30 on the spring-forward
night in Berlin is 03:30 summer time); a time in the repeated hour of the
autumn is its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from watcher.core.settings import QuietHours

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    """One occurrence of a quiet-hours window, as aware UTC datetimes; `end` is exclusive."""

    name: str
    start: datetime
    end: datetime


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`day` at wall-clock `at` in `zone`, as UTC (PEP 495 fold=0 for gaps and repeats)."""
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def occurrence(quiet: QuietHours, day: date) -> Window | None:
    """The window that starts on local `day`, or None if windows do not start on that weekday."""
    if day.weekday() not in quiet.days:
        return None
    zone = ZoneInfo(quiet.timezone)
    start = _local(day, quiet.start, zone)
    end_day = day if quiet.end > quiet.start else day + timedelta(days=1)
    end = _local(end_day, quiet.end, zone)
    return Window(quiet.name, start, end)


def active_window(quiet: QuietHours, now: datetime) -> Window | None:
    """The occurrence of `quiet` that contains `now`, if any."""
    today = now.astimezone(ZoneInfo(quiet.timezone)).date()
    for day in (today - timedelta(days=1), today):
        window = occurrence(quiet, day)
        if window is not None and window.start <= now < window.end:
            return window
    return None
