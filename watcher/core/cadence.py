"""How often each session is polled: per-state intervals, idle backoff, the request budget.

A session's interval is data computed from its last known state and `now`;
the shell moves the session in the timetable when the answer changes enough to matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.model import Gone, KnownStatus, SessionState
from watcher.core.settings import PollSettings, Settings

# An idle session waits this fraction of the time it has been quiet before its
# next poll: quiet for 2 minutes -> polled again after 1 (within idle..max_idle).
IDLE_BACKOFF = 0.5
# A new interval within this fraction of the old one keeps the job as it is.
RESCHEDULE_TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class Cadence:
    """The interval to poll at (None: stop polling), and why."""

    interval: timedelta | None
    reason: str


def poll_cadence(
    poll: PollSettings, fixed: timedelta | None, state: SessionState | None, now: datetime
) -> Cadence:
    """The interval for a session given its fixed `interval:` (if any), last state and `now`.

    Running and pending sessions use their own intervals; an idle one starts at
    `idle` after its last change (`updatedAt`) and backs off to `max_idle`;
    archived ones use `archived` or stop; unknown statuses use `interval`.
    """
    if fixed is not None:
        return Cadence(fixed, "fixed by the session's interval")
    if state is None:
        return Cadence(poll.interval, "not seen yet")
    if isinstance(state, Gone):
        return Cadence(poll.idle_cap, "deleted")
    if state.archived_at is not None:
        if poll.archived_off:
            return Cadence(None, "archived; polling is off for archived sessions")
        if poll.archived is not None:
            return Cadence(poll.archived, "archived")
    elif state.status == KnownStatus.RUNNING:
        return Cadence(poll.running or poll.interval, "running")
    elif state.status == KnownStatus.PENDING:
        return Cadence(poll.pending or poll.interval, "pending")
    elif state.status != KnownStatus.IDLE:
        return Cadence(poll.interval, f"unknown status {state.status!r}")
    base, cap = poll.idle_base, poll.idle_cap
    quiet = max(now - state.updated_at, timedelta(0))
    interval = min(cap, max(base, quiet * IDLE_BACKOFF))
    if interval == base:
        return Cadence(interval, "idle, recently active")
    return Cadence(interval, f"idle for {quiet.total_seconds():.0f}s, backing off")


def needs_reschedule(current: timedelta | None, new: timedelta | None) -> bool:
    """Whether a job at `current` must move to `new`: on/off, faster, or notably slower.

    Getting faster always reschedules (activity snaps back at once); slowing
    down waits until the change exceeds the tolerance, so a backing-off idle
    session is not rescheduled on every poll.
    """
    if current is None or new is None:
        return current != new
    if new < current:
        return True
    return new > current * (1 + RESCHEDULE_TOLERANCE)


def poll_deadline(queued_at: float, interval: timedelta | None, fallback: timedelta) -> float:
    """When a queued poll is due at the latest: one of its intervals after it was queued.

    Polls waiting for the budget go earliest deadline first, so running
    sessions (short intervals) go first when the budget is short, yet a
    slowly polled session is never starved: its deadline comes too.
    """
    return queued_at + (interval or fallback).total_seconds()


class Priority:
    """Tie-breaker between polls with the same deadline: smaller goes first."""

    RUNNING = 0
    PENDING = 1
    OTHER = 2


def poll_priority(state: SessionState | None) -> int:
    """Running sessions go first when the budget is short, then pending, then the rest."""
    if state is None or isinstance(state, Gone):
        return Priority.OTHER
    if state.status == KnownStatus.RUNNING:
        return Priority.RUNNING
    if state.status == KnownStatus.PENDING:
        return Priority.PENDING
    return Priority.OTHER


@dataclass(frozen=True, slots=True)
class BudgetNeed:
    """Requests per second the configured sessions need, against the budget."""

    fixed: float  # sessions with their own `interval:` (always polled at it)
    fastest: float  # every configured session at its fastest state interval, plus discovery
    budget: float

    @property
    def fixed_exceeds(self) -> bool:
        """The fixed sessions alone need more than the budget: contradictory settings."""
        return self.fixed > self.budget

    @property
    def may_fall_behind(self) -> bool:
        """At their fastest intervals the configured sessions would need more than the budget."""
        return self.fastest > self.budget


def _fastest(poll: PollSettings) -> timedelta:
    states: Iterable[timedelta | None] = (
        poll.running,
        poll.pending,
        poll.idle_base,
        poll.interval,
        None if poll.archived_off else poll.archived,
    )
    return min(s for s in states if s is not None)


def budget_need(settings: Settings) -> BudgetNeed:
    """What the configured sessions (and one list page per discovery) ask of the budget."""
    fastest_default = _fastest(settings.poll)
    fixed = sum(1 / s.interval.total_seconds() for s in settings.sessions if s.interval)
    fastest = sum(1 / (s.interval or fastest_default).total_seconds() for s in settings.sessions)
    if settings.discover is not None:
        fastest += 1 / settings.discover.interval.total_seconds()
    return BudgetNeed(fixed, fastest, settings.factory.max_requests_per_second)


def budget_warnings(settings: Settings) -> tuple[str, ...]:
    """Why the configured sessions may not be polled at their intervals within the budget."""
    need = budget_need(settings)
    if not need.may_fall_behind:
        return ()
    return (
        f"at their fastest intervals the configured sessions (and discovery) need "
        f"{need.fastest:.2f} requests/s, more than factory.max_requests_per_second "
        f"({need.budget:g}); polls will be spread out and come later than configured",
    )
