"""A report's calendar: its cron expression in its timezone, as instants in UTC.

The expression is the classic five fields (minute, hour, day of month, month,
day of week), with crontab's meanings: weekday 0 and 7 are Sunday, names
(`mon`, `jan`) in any case, `*`, lists, ranges and steps, and a day that
matches when either day field does if both are restricted. It is checked
here, field by field, so a mistake is named precisely; APScheduler 3.11's
`CronTrigger` then walks the calendar.

Daylight saving time. APScheduler 3.11 walks wall-clock time in an aware
zone, and at a fall-back change it returns a repeated hour's times twice, or
the same time again and again. So the calendar is walked here in plain
wall-clock time (a trigger on UTC, which has no changes) and each wall time
is placed in the report's zone by one rule: it fires at the earliest instant
whose local time is at or after it. A time that happens twice (fall back)
fires once, at its first occurrence; a time that does not happen (spring
forward) fires at the change, as cron does, and once however many of the
skipped times the expression names.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from watcher.config.values import parse_timezone
from watcher.core.settings import ReportSpec

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

# How far ahead a calendar is searched before it is said never to fire (29 February
# on a Monday recurs within 28 years).
HORIZON = timedelta(days=366 * 29)
# Wall times walked for one call at most: a schedule due every minute over a year.
MAX_STEPS = 600_000

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# APScheduler 3 numbers weekdays from Monday = 0; crontab from Sunday = 0. Names agree.


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0  # the number of names[0]


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day of week", 0, 7, _WEEKDAYS, 0),
)


class CronError(ValueError):
    """A cron expression or timezone that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Calendar:
    """A checked expression in its zone: the wall-clock triggers and the zone."""

    expression: str
    zone: ZoneInfo
    triggers: tuple[CronTrigger, ...]


def _value(field: _Field, text: str, expr: str) -> int:
    word = text.lower()
    if field.names and word in field.names:
        return field.names.index(word) + field.first_name
    if not text.isdigit():
        allowed = f" or a name ({field.names[0]}…{field.names[-1]})" if field.names else ""
        raise CronError(
            f'"{expr}" is not a cron expression: {field.name} {text!r} is not a number{allowed}'
        )
    number = int(text)
    if not field.low <= number <= field.high:
        raise CronError(
            f'"{expr}" is not a cron expression: {field.name} {number} out of range'
            f" {field.low}-{field.high}"
        )
    return number


_ITEM = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


def _field_values(field: _Field, text: str, expr: str) -> set[int]:
    """The numbers one field names."""
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise CronError(
                f'"{expr}" is not a cron expression: {field.name} {item!r} is not'
                " `*`, a value, a range `a-b`, or one of those with a step `/n`"
            )
        part, step_text = match["range"], match["step"]
        step = 1 if step_text is None else int(step_text)
        if step == 0:
            raise CronError(f'"{expr}" is not a cron expression: {field.name} step 0')
        if part == "*":
            low, high = field.low, field.high
        elif "-" in part:
            a, b = part.split("-", 1)
            low, high = _value(field, a, expr), _value(field, b, expr)
            if low > high:
                raise CronError(
                    f'"{expr}" is not a cron expression: {field.name} range {part!r} runs backwards'
                )
        else:
            low = _value(field, part, expr)
            high = field.high if step_text is not None else low
        values.update(range(low, high + 1, step))
    return values


def _apscheduler_field(field: _Field, values: set[int]) -> str:
    """One field as APScheduler reads it: `*` or an explicit list (weekdays by name)."""
    if field.names == _WEEKDAYS:
        days = {v % 7 for v in values}
        return "*" if len(days) == 7 else ",".join(_WEEKDAYS[d] for d in sorted(days))
    if len(values) == field.high - field.low + 1:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def parse_calendar(expression: str, timezone: str) -> Calendar:
    """Check a cron expression and an IANA timezone; CronError says what is wrong."""
    try:
        # The config's one timezone check (the `timezone` key has passed it already).
        zone = ZoneInfo(parse_timezone(timezone))
    except ValueError as error:
        raise CronError(str(error)) from None
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise CronError(
            f'"{expression}" is not a cron expression: {len(parts)} fields, expected 5'
            " (minute hour day-of-month month day-of-week)"
        )
    fields = [
        _apscheduler_field(f, _field_values(f, text, expression))
        for f, text in zip(_FIELDS, parts, strict=True)
    ]
    minute, hour, day, month, weekday = fields
    # crontab: when both day fields are restricted, a day matching either one fires.
    if not parts[2].startswith("*") and not parts[4].startswith("*"):
        shapes = [(day, "*"), ("*", weekday)]
    else:
        shapes = [(day, weekday)]
    # Imported here: a config without reports (and `--help`) need not load APScheduler.
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415

    triggers = tuple(
        CronTrigger(minute=minute, hour=hour, day=d, month=month, day_of_week=w, timezone=UTC)
        for d, w in shapes
    )
    calendar = Calendar(expression, zone, triggers)
    probe = datetime(2026, 1, 1, tzinfo=UTC)
    if (
        _next_wall(calendar, probe.replace(tzinfo=None), probe.replace(tzinfo=None) + HORIZON)
        is None
    ):
        raise CronError(f'"{expression}" never fires: no date matches it')
    return calendar


def _next_wall(calendar: Calendar, after: datetime, until: datetime) -> datetime | None:
    """The first wall-clock time strictly after `after` (naive), up to `until`."""
    probe = after.replace(tzinfo=UTC) + timedelta(microseconds=1)
    found = [t.get_next_fire_time(None, probe) for t in calendar.triggers]
    times = [f for f in found if f is not None]
    if not times:
        return None
    wall = min(times).replace(tzinfo=None)
    return wall if wall <= until else None


def _local_wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def place(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a wall-clock time fires: the earliest one whose local time is at
    or after it (its first occurrence when it happens twice, the change when it never does).
    """
    candidates = [wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)]
    exact = [c for c in candidates if _local_wall(c, zone) == wall]
    if exact:
        return min(exact)
    # In a gap: local time jumps past `wall` between the two readings; changes fall
    # on whole seconds, so a search over seconds finds the change itself.
    low, high = (int(c.timestamp()) for c in sorted(candidates))
    while high - low > 1:
        middle = (low + high) // 2
        if _local_wall(datetime.fromtimestamp(middle, UTC), zone) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _walk(calendar: Calendar, after: datetime) -> Iterator[datetime]:
    """Fire instants strictly after `after` (aware), ascending, each once."""
    # Start a few hours back in wall time: around a fall-back change the local time
    # of `after` may be a repeat, and times before it may still fire after `after`.
    wall = _local_wall(after, calendar.zone) - timedelta(hours=3)
    until = wall + HORIZON
    last: datetime | None = None
    for _ in range(MAX_STEPS):
        found = _next_wall(calendar, wall, until)
        if found is None:
            return
        wall = found
        instant = place(found, calendar.zone)
        if instant > after and instant != last:
            last = instant
            yield instant


def _calendar_of(spec: ReportSpec) -> Calendar:
    return parse_calendar(spec.schedule, spec.timezone)


def fire_times(spec: ReportSpec, after: datetime, count: int) -> list[datetime]:
    """The next `count` scheduled times of `spec` strictly after `after`, aware UTC."""
    out: list[datetime] = []
    if count <= 0:
        return out
    for instant in _walk(_calendar_of(spec), after):
        out.append(instant)
        if len(out) >= count:
            break
    return out


def fire_times_between(
    spec: ReportSpec, start: datetime, end: datetime, limit: int
) -> list[datetime]:
    """Scheduled times t of `spec` with start < t <= end, ascending: the latest `limit`."""
    if limit <= 0 or end <= start:
        return []
    calendar = _calendar_of(spec)
    # Only the latest `limit` matter: look back from `end` over a span that doubles
    # until it holds enough of them, so a long outage costs what it returns.
    span = timedelta(hours=1)
    while True:
        since = max(start, end - span)
        kept: deque[datetime] = deque(maxlen=limit)
        for instant in _walk(calendar, since):
            if instant > end:
                break
            kept.append(instant)
        if len(kept) >= limit or since == start:
            return list(kept)
        span *= 2


def check_schedule(expression: str, timezone: str) -> str | None:
    """What is wrong with a report's `schedule` in `timezone`, or None when it can be used."""
    try:
        parse_calendar(expression, timezone)
    except CronError as error:
        return str(error)
    return None
