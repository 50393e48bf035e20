"""When a report runs: due, coalesced, skipped too late, waiting; its window; DST."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from watcher.config.cron import fire_times, fire_times_between
from watcher.core.reportclock import (
    FIRST_WINDOW,
    LOOKBACK,
    Run,
    Skip,
    Wait,
    decide,
    is_new,
    scan_from,
    window,
)
from watcher.core.settings import ReportSpec

H = timedelta(hours=1)
M = timedelta(minutes=1)


def Spec(**changes: Any) -> ReportSpec:  # noqa: N802 (reads as the value it builds)
    """A daily 09:00 UTC report with `changes`."""
    return replace(ReportSpec(name="daily", schedule="0 9 * * *"), **changes)


def utc(text: str) -> datetime:
    """An aware UTC datetime from `YYYY-MM-DD HH:MM[:SS]`."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def times(*texts: str) -> tuple[datetime, ...]:
    """Aware UTC datetimes."""
    return tuple(utc(t) for t in texts)


NEXT = utc("2026-12-02 09:00")
DAY = "2026-12-01 "  # a time written "09:00" is on this day; others name their day


def at(text: str) -> datetime:
    """`HH:MM[:SS]` on DAY, or a full `YYYY-MM-DD HH:MM`."""
    return utc(text if "-" in text else DAY + text)


@dataclass(frozen=True, slots=True)
class Case:
    """One decision: the inputs, and what it must be (`others`: coalesced, or all missed)."""

    last: str | None
    due: tuple[str, ...]
    now: str
    kind: type
    scheduled: str | None = None
    others: tuple[str, ...] = ()
    floor: str | None = None


CASES = {
    "nothing scheduled yet": Case("09:00", (), "12:00", Wait),
    "on time": Case("2026-11-30 09:00", ("09:00",), "09:00", Run, "09:00"),
    "a little late": Case("2026-11-30 09:00", ("09:00",), "09:59", Run, "09:00"),
    "exactly the grace late": Case("2026-11-30 09:00", ("09:00",), "10:00", Run, "09:00"),
    "past the grace": Case("2026-11-30 09:00", ("09:00",), "10:00:01", Skip, "09:00", ("09:00",)),
    "several missed coalesce into the latest": Case(
        "08:00", ("08:15", "08:30", "08:45"), "08:50", Run, "08:45", ("08:15", "08:30")
    ),
    "old missed times coalesce when the latest is within grace": Case(
        "2026-11-28 09:00",
        ("2026-11-29 09:00", "2026-11-30 09:00", "09:00"),
        "09:30",
        Run,
        "09:00",
        ("2026-11-29 09:00", "2026-11-30 09:00"),
    ),
    "all missed too long ago": Case(
        "2026-11-28 09:00",
        ("2026-11-29 09:00", "2026-11-30 09:00"),
        "2026-11-30 12:00",
        Skip,
        "2026-11-30 09:00",
        ("2026-11-29 09:00", "2026-11-30 09:00"),
    ),
    "the last run already covers it": Case("09:00", ("09:00",), "09:10", Wait),
    "a time before the last run is not due": Case("09:00", ("08:00",), "09:10", Wait),
    "a time in the future is not due": Case("2026-11-30 09:00", ("09:00",), "08:59:59", Wait),
    "never ran: a time within grace runs": Case(None, ("09:00",), "09:20", Run, "09:00"),
    "never ran: the latest time within grace runs, nothing folded in": Case(
        None, ("08:40", "08:50", "09:00"), "09:20", Run, "09:00"
    ),
    "a skipped time is not skipped again": Case(
        "2026-11-28 09:00",
        ("2026-11-30 09:00",),
        "2026-11-30 12:00",
        Wait,
        floor="2026-11-30 09:00",
    ),
    "a time before a reschedule is not due": Case(
        "2026-11-28 09:00", ("09:00",), "09:10", Wait, floor="09:05"
    ),
    "a time after a reschedule is due": Case(
        "2026-11-28 09:00", ("09:00", "09:10"), "09:10", Run, "09:10", floor="09:05"
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_report_runs_skips_or_waits(case: Case) -> None:
    """The latest due time within grace runs (earlier ones folded in); older ones are skipped."""
    decision = decide(
        Spec(),
        last_run=None if case.last is None else at(case.last),
        floor=None if case.floor is None else at(case.floor),
        due=tuple(at(t) for t in case.due),
        now=at(case.now),
        next_fire=NEXT,
    )
    assert type(decision) is case.kind, decision
    others = tuple(at(t) for t in case.others)
    if isinstance(decision, Run):
        assert (decision.scheduled_at, decision.coalesced) == (at(str(case.scheduled)), others)
    elif isinstance(decision, Skip):
        assert (decision.scheduled_at, decision.missed) == (at(str(case.scheduled)), others)
        assert "misfire_grace (1h)" in decision.reason
    else:
        assert isinstance(decision, Wait)
        assert decision.until == NEXT


def test_a_skip_says_how_many_times_were_missed_and_how_late() -> None:
    """The skip's reason is the log line: count, latest time, lateness, the grace."""
    decision = decide(
        Spec(misfire_grace=timedelta(minutes=30)),
        last_run=utc("2026-11-28 09:00"),
        due=times("2026-11-29 09:00", "2026-11-30 09:00"),
        now=utc("2026-11-30 11:00"),
        next_fire=NEXT,
    )
    assert isinstance(decision, Skip)
    assert decision.reason == (
        "2 scheduled times missed, the latest (2026-11-30T09:00:00+00:00) 2h late:"
        " past misfire_grace (30m)"
    )


@pytest.mark.parametrize(
    ("spec", "last", "at", "start"),
    [
        (Spec(window=24 * H), "2026-11-30 09:00", "2026-12-01 09:00", "2026-11-30 09:00"),
        (Spec(window=7 * 24 * H), None, "2026-12-01 09:00", "2026-11-24 09:00"),
        (Spec(window=2 * H), "2026-11-20 09:00", "2026-12-01 09:00", "2026-12-01 07:00"),
        # since_last: from the last run; the first run ever covers the day before.
        (Spec(), "2026-11-30 17:00", "2026-12-01 09:00", "2026-11-30 17:00"),
        (Spec(), "2026-11-20 09:00", "2026-12-01 09:00", "2026-11-20 09:00"),
        (Spec(), None, "2026-12-01 09:00", "2026-11-30 09:00"),
    ],
)
def test_the_window_of_a_run(spec: ReportSpec, last: str | None, at: str, start: str) -> None:
    """[T - window, T], or since_last [last run, T] (never ran: T - 24h)."""
    assert window(spec, None if last is None else utc(last), utc(at)) == (utc(start), utc(at))


def test_a_run_covers_its_window() -> None:
    """The decision carries the window of the time it runs for."""
    decision = decide(
        Spec(),
        last_run=utc("2026-11-30 09:00"),
        due=times("2026-12-01 09:00"),
        now=utc("2026-12-01 09:00"),
        next_fire=NEXT,
    )
    assert isinstance(decision, Run)
    assert (decision.start, decision.end) == times("2026-11-30 09:00", "2026-12-01 09:00")
    assert FIRST_WINDOW == 24 * H


@pytest.mark.parametrize(
    ("last", "floor", "now", "grace", "start"),
    [
        (None, None, "2026-12-01 09:00", H, "2026-12-01 08:00"),
        ("2026-12-01 07:00", None, "2026-12-01 09:00", H, "2026-12-01 07:00"),
        ("2026-12-01 07:00", "2026-12-01 08:30", "2026-12-01 09:00", H, "2026-12-01 08:30"),
        (None, "2026-12-01 08:50", "2026-12-01 09:00", H, "2026-12-01 08:50"),
        # A report that ran long ago is looked at LOOKBACK back, not walked for months.
        ("2026-01-01 00:00", None, "2026-12-01 09:00", H, "2026-11-24 09:00"),
        ("2026-01-01 00:00", None, "2026-12-01 09:00", 30 * 24 * H, "2026-11-01 09:00"),
    ],
)
def test_where_due_times_are_looked_for(
    last: str | None, floor: str | None, now: str, grace: timedelta, start: str
) -> None:
    """After the last run or floor, at most LOOKBACK (or the grace) back; never ran: the grace."""
    found = scan_from(
        None if last is None else utc(last), None if floor is None else utc(floor), utc(now), grace
    )
    assert found == utc(start)
    assert LOOKBACK == 7 * 24 * H


@pytest.mark.parametrize(
    ("at", "after", "zone", "new"),
    [
        # Berlin falls back at 03:00 CEST (01:00 UTC) on 25 Oct 2026: 02:30 comes twice.
        ("2026-10-25 01:30", "2026-10-25 00:30", "Europe/Berlin", False),
        ("2026-10-25 01:30", "2026-10-24 00:30", "Europe/Berlin", True),
        # In UTC the same instants are an hour apart, so both are new.
        ("2026-10-25 01:30", "2026-10-25 00:30", "UTC", True),
        ("2026-10-25 00:30", "2026-10-25 00:30", "Europe/Berlin", False),
        ("2026-10-25 00:29", "2026-10-25 00:30", "UTC", False),
    ],
)
def test_a_time_is_new_only_after_the_last_run_on_the_wall_clock_too(
    at: str, after: str, zone: str, new: bool
) -> None:
    """The second 02:30 of a fall-back night is not a new scheduled time."""
    assert is_new(utc(at), utc(after), ZoneInfo(zone)) is new


def walk(spec: ReportSpec, start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """The scheduled times `spec` runs for when looked at every `step` and at each fire time.

    What the report part does, without its I/O: the calendar's due times since the
    last run, a decision, and the run recorded as the new last run.
    """
    looks = {start + n * step for n in range(int((end - start) / step) + 1)}
    looks |= set(fire_times_between(spec, start, end, 1000))
    last: datetime | None = None
    runs: list[datetime] = []
    for now in sorted(looks):
        due = fire_times_between(spec, scan_from(last, None, now, spec.misfire_grace), now, 100)
        nxt = fire_times(spec, now, 1)
        decision = decide(spec, last_run=last, due=due, now=now, next_fire=nxt[0] if nxt else None)
        assert not isinstance(decision, Skip), decision
        if isinstance(decision, Run):
            runs.append(decision.scheduled_at)
            last = decision.scheduled_at
    return runs


DST = {
    # Berlin springs forward at 02:00 CET (01:00 UTC): 02:30 does not exist; it runs at
    # the change (03:00 CEST), once.
    "Berlin, spring forward": (
        "Europe/Berlin",
        "2026-03-27 23:00",
        ("2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"),
    ),
    # Berlin falls back at 03:00 CEST (01:00 UTC): 02:30 happens twice; it runs once,
    # at the first (CEST).
    "Berlin, fall back": (
        "Europe/Berlin",
        "2026-10-23 23:00",
        ("2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"),
    ),
    # New York springs forward at 02:00 EST (07:00 UTC): 02:30 runs at the change.
    "New York, spring forward": (
        "America/New_York",
        "2026-03-07 05:00",
        ("2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"),
    ),
    # New York falls back at 02:00 EDT to 01:00 EST: 02:30 happens once (EST).
    "New York, fall back": (
        "America/New_York",
        "2026-10-31 05:00",
        ("2026-10-31 06:30", "2026-11-01 07:30", "2026-11-02 07:30"),
    ),
}


@pytest.mark.parametrize(("zone", "start", "expected"), DST.values(), ids=DST.keys())
def test_a_0230_daily_report_runs_once_a_day_across_dst_changes(
    zone: str, start: str, expected: tuple[str, ...]
) -> None:
    """Once each day: never twice on the fall-back night, never skipped on spring-forward."""
    spec = Spec(schedule="30 2 * * *", timezone=zone)
    first = utc(start)
    runs = walk(spec, first, first + timedelta(days=2, hours=23), timedelta(minutes=10))
    assert runs == list(times(*expected))


def test_a_0130_report_runs_once_in_new_yorks_repeated_hour() -> None:
    """01:30 happens twice in New York on 1 Nov 2026 (EDT, then EST); it runs at the first."""
    spec = Spec(schedule="30 1 * * *", timezone="America/New_York")
    first = utc("2026-10-31 04:00")
    runs = walk(spec, first, first + timedelta(days=2, hours=3), timedelta(minutes=5))
    assert runs == list(times("2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"))


def test_a_half_hourly_report_runs_each_wall_time_once_in_a_fall_back_night() -> None:
    """Every 30 minutes in Berlin on 25 Oct 2026: the repeated hour adds no runs."""
    spec = Spec(schedule="*/30 * * * *", timezone="Europe/Berlin")
    runs = walk(spec, utc("2026-10-24 23:10"), utc("2026-10-25 02:40"), timedelta(minutes=5))
    local = [r.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") for r in runs]
    # 01:00 is the time just before the first look, caught up as a report that never ran.
    assert local == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"]


@pytest.mark.parametrize(
    ("last", "due", "now", "reason"),
    [
        ("2026-11-30 09:00", ("09:00",), "09:00:00.5", "due"),
        ("2026-11-30 09:00", ("09:00",), "09:20", "due 20m ago"),
        (None, ("08:50", "09:00"), "09:00", "due; the first run of this report"),
        (
            "08:00",
            ("08:20", "08:40", "09:00"),
            "09:02",
            "due 2m ago; 2 earlier missed time(s) folded into this run",
        ),
    ],
)
def test_a_run_says_how_late_it_is_and_what_it_folds_in(
    last: str | None, due: tuple[str, ...], now: str, reason: str
) -> None:
    """The run's reason is its log line's tail: lateness, first run, missed times folded in."""
    decision = decide(
        Spec(),
        last_run=None if last is None else at(last),
        due=tuple(at(t) for t in due),
        now=at(now),
        next_fire=NEXT,
    )
    assert isinstance(decision, Run)
    assert decision.reason == reason
