"""When a report runs: due, coalesced, skipped too late, waiting; its window; DST."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

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

H = timedelta(hours=1)
M = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Spec:
    """The fields of a report the decision reads."""

    name: str = "daily"
    timezone: str = "UTC"
    window: timedelta | None = None
    misfire_grace: timedelta = H


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
def test_the_window_of_a_run(spec: Spec, last: str | None, at: str, start: str) -> None:
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
