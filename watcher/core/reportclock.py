"""When a scheduled report runs: one decision per report from its last run and `now`.

The calendar (cron with its timezone, DST included) is `watcher.config.cron`'s;
this module takes the scheduled times it found and decides, as a pure function:

- run for T, the latest scheduled time due, when it is at most `misfire_grace`
  old; earlier missed times are folded into that one run (coalesced), never
  sent one by one;
- skip, when even the latest due time is older than `misfire_grace` (the
  daemon was down too long): a log line, and nothing is sent for those times;
- wait until the next scheduled time otherwise.

A scheduled time is due only when it is later than the last run both as an
instant and on the report's wall clock. The calendar already places each wall
time once (`watcher.config.cron`: a time a fall-back repeats fires at its first
occurrence, a time a spring-forward skips fires at the change, as cron does);
the wall-clock condition keeps that true whatever instants the calendar hands
over, so a 02:30 report never runs twice in a fall-back night.

The window a run covers is [T - window, T], or for `since_last` [last run, T];
a report that never ran covers the 24 hours before T.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from watcher.core.settings import ReportSpec

FIRST_WINDOW = timedelta(hours=24)  # since_last for a report that never ran
# How far back a report that ran long ago is looked at for missed times: older ones
# are past any sensible grace, and a minutely report down for a year is not walked.
LOOKBACK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Run:
    """Run the report for `scheduled_at` over [start, end]; `coalesced`: earlier times folded in."""

    scheduled_at: datetime
    start: datetime
    end: datetime
    coalesced: tuple[datetime, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Skip:
    """Send nothing for `missed` (all too late); `scheduled_at` is the latest of them."""

    scheduled_at: datetime
    missed: tuple[datetime, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing due: look again at `until` (None: the schedule names no later time)."""

    until: datetime | None
    reason: str


Decision = Run | Skip | Wait


def scan_from(
    last_run: datetime | None, floor: datetime | None, now: datetime, grace: timedelta
) -> datetime:
    """Where to look for scheduled times due at `now` (exclusive).

    After the last run or `floor` (a time already skipped, or the moment a reload
    rescheduled the report), whichever is later, but at most `LOOKBACK` (or the
    grace, if longer) back. A report that never ran looks back its grace only: it
    catches up a time that passed while the daemon was down, as any report does.
    """
    marks = [m for m in (last_run, floor) if m is not None]
    if not marks:
        return now - grace
    return max(*marks, now - max(LOOKBACK, grace))


def is_new(at: datetime, after: datetime | None, zone: ZoneInfo) -> bool:
    """Whether scheduled time `at` comes after `after` as an instant and on the wall clock."""
    if after is None:
        return True
    wall = at.astimezone(zone).replace(tzinfo=None)
    return at > after and wall > after.astimezone(zone).replace(tzinfo=None)


def window(spec: ReportSpec, last_run: datetime | None, at: datetime) -> tuple[datetime, datetime]:
    """The span the run for `at` covers: [at - window, at], or since the last run."""
    if spec.window is not None:
        return at - spec.window, at
    if last_run is None or last_run >= at:
        return at - FIRST_WINDOW, at
    return last_run, at


def decide(
    spec: ReportSpec,
    *,
    last_run: datetime | None,
    due: Sequence[datetime],
    now: datetime,
    next_fire: datetime | None,
    floor: datetime | None = None,
) -> Decision:
    """Run, skip or wait for `spec` at `now`.

    `due` are the scheduled times up to `now` (from `scan_from` on); `last_run`
    the stored last run; `floor` a time already skipped or the moment the report
    was rescheduled (times up to it are not due); `next_fire` the next
    scheduled time after `now`.
    """
    zone = ZoneInfo(spec.timezone)
    marks = [m for m in (last_run, floor) if m is not None]
    after = max(marks) if marks else None
    fresh = sorted({t for t in due if t <= now and is_new(t, after, zone)})
    if not fresh:
        return Wait(next_fire, "nothing due")
    latest = fresh[-1]
    late = now - latest
    if late > spec.misfire_grace:
        return Skip(
            latest,
            tuple(fresh),
            f"{_count(fresh)} missed, the latest ({latest.isoformat()}) {_span(late)} late:"
            f" past misfire_grace ({_span(spec.misfire_grace)})",
        )
    start, end = window(spec, last_run, latest)
    # A report that never ran missed nothing: the times before its first are not folded in.
    coalesced = tuple(fresh[:-1]) if after is not None else ()
    # Late by a second or more is worth saying: the daemon was down, busy or asleep.
    reason = "due" if late < timedelta(seconds=1) else f"due {_span(late)} ago"
    if after is None:
        reason += "; the first run of this report"
    if coalesced:
        reason += f"; {len(coalesced)} earlier missed time(s) folded into this run"
    return Run(latest, start, end, coalesced, reason)


def _count(times: Sequence[datetime]) -> str:
    return "1 scheduled time" if len(times) == 1 else f"{len(times)} scheduled times"


def _span(value: timedelta) -> str:
    """A duration in the config's words: 90s, 5m, 2h, 3d (rounded down past a minute)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and (seconds % size == 0 or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
