"""A report's calendar: cron expressions checked field by field, fire times DST-correct."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from watcher.config.cron import CronError, check_schedule, fire_times, fire_times_between
from watcher.core.settings import ReportSpec

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _local(text: str, tz: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


FIRE_TIMES = [
    # (schedule, timezone, after (UTC), expected fire times (UTC))
    ("0 9 * * mon-fri", "UTC", "2026-12-04T10:00", ["2026-12-07T09:00", "2026-12-08T09:00"]),
    ("0 9 * * 1-5", "UTC", "2026-12-04T08:59", ["2026-12-04T09:00", "2026-12-07T09:00"]),
    ("0 9 * * 0", "UTC", "2026-12-04T00:00", ["2026-12-06T09:00", "2026-12-13T09:00"]),
    ("0 9 * * 7", "UTC", "2026-12-04T00:00", ["2026-12-06T09:00", "2026-12-13T09:00"]),
    ("*/15 * * * *", "UTC", "2026-12-04T10:00", ["2026-12-04T10:15", "2026-12-04T10:30"]),
    # Both day fields restricted: either one matching fires (crontab).
    ("0 9 13 * fri", "UTC", "2026-12-05T00:00", ["2026-12-11T09:00", "2026-12-13T09:00"]),
    # Berlin in winter is UTC+1, in summer UTC+2.
    ("0 9 * * *", BERLIN, "2026-03-28T00:00", ["2026-03-28T08:00", "2026-03-29T07:00"]),
    ("0 9 * * *", BERLIN, "2026-10-24T00:00", ["2026-10-24T07:00", "2026-10-25T08:00"]),
    # Spring forward, Berlin 2026-03-29: 02:00-03:00 does not happen; 02:30 fires at
    # the change (03:00 CEST = 01:00 UTC), once.
    ("30 2 * * *", BERLIN, "2026-03-28T12:00", ["2026-03-29T01:00", "2026-03-30T00:30"]),
    (
        "0,30 * * * *",
        BERLIN,
        "2026-03-28T23:45",
        ["2026-03-29T00:00", "2026-03-29T00:30", "2026-03-29T01:00", "2026-03-29T01:30"],
    ),
    # Fall back, Berlin 2026-10-25: 02:00-03:00 happens twice; 02:30 fires once, first.
    ("30 2 * * *", BERLIN, "2026-10-24T12:00", ["2026-10-25T00:30", "2026-10-26T01:30"]),
    (
        "0 * * * *",
        BERLIN,
        "2026-10-24T23:30",
        ["2026-10-25T00:00", "2026-10-25T02:00", "2026-10-25T03:00"],
    ),
    # New York: spring forward 2026-03-08 02:00 EST -> 03:00 EDT; fall back 2026-11-01.
    ("30 2 * * *", NEW_YORK, "2026-03-07T12:00", ["2026-03-08T07:00", "2026-03-09T06:30"]),
    (
        "0 * * * *",
        NEW_YORK,
        "2026-03-08T05:30",
        ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"],
    ),
    ("30 1 * * *", NEW_YORK, "2026-10-31T12:00", ["2026-11-01T05:30", "2026-11-02T06:30"]),
    (
        "0 * * * *",
        NEW_YORK,
        "2026-11-01T04:30",
        ["2026-11-01T05:00", "2026-11-01T07:00", "2026-11-01T08:00"],
    ),
]


@pytest.mark.parametrize(("schedule", "tz", "after", "expected"), FIRE_TIMES)
def test_fire_times_follow_the_calendar_in_the_reports_timezone(
    schedule: str, tz: str, after: str, expected: list[str]
) -> None:
    """The next fire times are the cron's wall times in the zone: a repeated time once, a
    skipped one at the change."""
    spec = ReportSpec("r", schedule, tz)
    got = fire_times(spec, _utc(after), len(expected))
    assert got == [_utc(t) for t in expected]
    assert all(t.tzinfo is UTC for t in got)


def test_fire_times_are_strictly_after_the_given_time() -> None:
    """A time exactly at a fire time is not one of the next times."""
    spec = ReportSpec("r", "0 9 * * *")
    assert fire_times(spec, _utc("2026-12-04T09:00"), 1) == [_utc("2026-12-05T09:00")]


def test_fire_times_from_inside_the_repeated_hour_do_not_repeat_it() -> None:
    """After the second 01:30 of a fall-back night, the next hourly time is 02:00 EST."""
    spec = ReportSpec("r", "30 * * * *", NEW_YORK)
    second = _utc("2026-11-01T06:30")  # 01:30 EST, the repeat
    assert fire_times(spec, second, 2) == [_utc("2026-11-01T07:30"), _utc("2026-11-01T08:30")]


BETWEEN = [
    # (schedule, start, end, limit, expected)
    (
        "0 9 * * *",
        "2026-12-01T09:00",
        "2026-12-03T09:00",
        10,
        ["2026-12-02T09:00", "2026-12-03T09:00"],
    ),
    ("0 9 * * *", "2026-12-01T09:00", "2026-12-03T08:59", 10, ["2026-12-02T09:00"]),
    ("0 9 * * *", "2026-12-01T09:01", "2026-12-01T10:00", 10, []),
    (
        "* * * * *",
        "2025-01-01T00:00",
        "2026-01-01T00:00",
        2,
        ["2025-12-31T23:59", "2026-01-01T00:00"],
    ),
    ("0 9 * * mon", "2025-01-01T00:00", "2026-01-08T00:00", 1, ["2026-01-05T09:00"]),
    ("0 9 * * *", "2026-12-03T09:00", "2026-12-01T09:00", 10, []),
]


@pytest.mark.parametrize(("schedule", "start", "end", "limit", "expected"), BETWEEN)
def test_fire_times_between_are_the_latest_due_in_the_half_open_window(
    schedule: str, start: str, end: str, limit: int, expected: list[str]
) -> None:
    """Scheduled times in (start, end], ascending, at most `limit`: the latest ones."""
    got = fire_times_between(ReportSpec("r", schedule), _utc(start), _utc(end), limit)
    assert got == [_utc(t) for t in expected]


def test_fire_times_between_in_a_zone_counts_a_repeated_time_once() -> None:
    """Berlin's fall-back day lasts 25 hours; its 24 hourly wall times fire once each."""
    spec = ReportSpec("r", "0 * * * *", BERLIN)
    start = _local("2026-10-25T00:00", BERLIN)
    end = _local("2026-10-26T00:00", BERLIN)
    got = fire_times_between(spec, start, end, 100)
    assert len(got) == 24
    assert got == sorted(set(got))


BAD = [
    ("0 25 * * *", "UTC", '"0 25 * * *" is not a cron expression: hour 25 out of range 0-23'),
    ("60 * * * *", "UTC", "minute 60 out of range 0-59"),
    ("0 9 * *", "UTC", "4 fields, expected 5"),
    ("0 9 * * mon-fry", "UTC", "day of week 'fry' is not a number or a name"),
    ("*/0 * * * *", "UTC", "minute step 0"),
    ("5-1 * * * *", "UTC", "minute range '5-1' runs backwards"),
    ("0 9 L * *", "UTC", "day of month 'L' is not a number"),
    ("0 9 1 13 *", "UTC", "month 13 out of range 1-12"),
    ("0 9 31 2 *", "UTC", "never fires"),
    ("0 9 * * *", "Europe/Berlín", "unknown time zone 'Europe/Berlín'"),
    ("0 9 * * *", "../etc/passwd", "expected an IANA time zone name"),
    ("0 9 * * *", "", "expected an IANA time zone name"),
]


@pytest.mark.parametrize(("schedule", "tz", "message"), BAD)
def test_a_bad_schedule_or_timezone_is_named_precisely(
    schedule: str, tz: str, message: str
) -> None:
    """Each mistake gets a message that names the field and what was expected."""
    problem = check_schedule(schedule, tz)
    assert problem is not None
    assert message in problem


@pytest.mark.parametrize(
    "schedule", ["0 9 * * mon-fri", "*/5 * * * *", "0 0 1 jan *", "0 9 * * SUN"]
)
def test_a_good_schedule_has_no_problem(schedule: str) -> None:
    """Names in any case, steps and ranges are accepted."""
    assert check_schedule(schedule, "Europe/Berlin") is None


def test_fire_times_of_an_unusable_schedule_raise_cron_error() -> None:
    """The calendar functions refuse a schedule the config would have refused."""
    with pytest.raises(CronError):
        fire_times(ReportSpec("r", "0 25 * * *"), _utc("2026-01-01T00:00"), 1)
