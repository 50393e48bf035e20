"""The leader's trust in its lease, by its own monotonic clock (pure).

A leader holds the lease row until the database's `expires_at`; it cannot
read that clock, so it trusts itself only until the monotonic start of its
last successful renewal + ttl - margin (the renewal committed after it
started, so the database's expiry is later than that). Past that point it
stops polling and sending before the database says anything. No send
starts unless the window still holds the whole send timeout.

Everything here takes `now` (seconds on one monotonic clock) and returns
values with a reason; the daemon's replica does the waiting and the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


class StepDown(StrEnum):
    """Why a leader stopped leading (the `reason` label of leadership changes)."""

    EXPIRED = "expired"  # the trust window ran out without a successful renewal
    FENCED = "fenced"  # a write was refused: the database says another epoch leads
    LOST = "lost"  # a renewal found our lease row gone (taken over, or expired)
    RESIGNED = "resigned"  # we gave it up (a stop)
    CONNECTION = "connection"  # the lease session was ended, or renewals failed past the window


class Action(StrEnum):
    """What a leader does next."""

    RENEW = "renew"
    STEP_DOWN = "step_down"


class Renewal(StrEnum):
    """How one renewal attempt ended."""

    RENEWED = "renewed"  # the row was ours and now expires later
    LOST = "lost"  # no row came back: another epoch holds it, or it expired
    FAILED = "failed"  # the database could not be asked (no answer in time, unreachable)
    BROKEN = "broken"  # the server ended our lease session (terminated, reset): step down


@dataclass(frozen=True, slots=True)
class LeaseTimes:
    """The lease's durations in seconds: its ttl, how often the leader renews it,
    and the margin the leader keeps from the ttl (clock rate differences, latency).
    """

    ttl: float
    renew_every: float
    margin: float

    @classmethod
    def of(cls, ttl: timedelta, renew_every: timedelta, margin: timedelta) -> LeaseTimes:
        """Lease times from the settings' durations."""
        return cls(ttl.total_seconds(), renew_every.total_seconds(), margin.total_seconds())

    @property
    def retry_every(self) -> float:
        """How soon a failed renewal is tried again (several tries fit in one window)."""
        return self.renew_every / 4

    @property
    def standby_every(self) -> float:
        """How often a standby tries to take the lease, before jitter."""
        return self.renew_every / 2


def send_timeout(target_timeout: float, ttl: float) -> float:
    """The time a send may take in HA mode: the target's, but at most half the ttl."""
    return min(target_timeout, ttl / 2)


def standby_wait(times: LeaseTimes, jitter: float) -> float:
    """How long a standby waits before its next try; `jitter` in [0, 1) spreads
    replicas over ±25% of the period so they do not ask in lockstep.
    """
    return times.standby_every * (0.75 + 0.5 * jitter)


@dataclass(frozen=True, slots=True)
class Next:
    """A leader's next step: renew at `at`, or step down now for `reason`."""

    action: Action
    at: float
    reason: StepDown | None = None


@dataclass(frozen=True, slots=True)
class Trust:
    """A leader's trust in its lease of `epoch`, from the start of its last
    successful renewal (or acquisition) `renewed_at`, a monotonic time.
    """

    epoch: int
    renewed_at: float
    times: LeaseTimes
    failures: int = 0  # renewals failed since the last success

    @property
    def until(self) -> float:
        """The end of the trust window: last renewal's start + ttl - margin."""
        return self.renewed_at + self.times.ttl - self.times.margin

    def left(self, now: float) -> float:
        """Seconds of trust left at `now` (negative once it has run out)."""
        return self.until - now

    def trusted(self, now: float) -> bool:
        """Whether the leader may still act at `now`."""
        return now < self.until

    def may_send(self, now: float, timeout: float) -> bool:
        """Whether a send that may take `timeout` seconds can start at `now`: it must
        end inside the window, or a successor could send the same row meanwhile.
        """
        return self.left(now) >= timeout

    def next(self, now: float) -> Next:
        """What to do at `now`: step down once trust has run out; otherwise renew on
        the renewal grid, or sooner after a failed renewal.
        """
        if not self.trusted(now):
            reason = StepDown.CONNECTION if self.failures else StepDown.EXPIRED
            return Next(Action.STEP_DOWN, now, reason)
        if self.failures:
            return Next(Action.RENEW, now + self.times.retry_every)
        return Next(Action.RENEW, max(now, self.renewed_at + self.times.renew_every))

    def after(self, renewal: Renewal, started: float, now: float) -> tuple[Trust, Next]:
        """The trust after a renewal that `started` at that monotonic time ended as
        `renewal` at `now`, and what to do next.
        """
        if renewal is Renewal.LOST:
            return self, Next(Action.STEP_DOWN, now, StepDown.LOST)
        if renewal is Renewal.BROKEN:
            # Whoever ended our session (an operator, a failover of the database) meant
            # this replica to stop; a slow answer, by contrast, is retried in the window.
            return self, Next(Action.STEP_DOWN, now, StepDown.CONNECTION)
        if renewal is Renewal.RENEWED:
            # A late answer to an older attempt never moves the window back.
            trust = Trust(self.epoch, max(self.renewed_at, started), self.times)
        else:
            trust = Trust(self.epoch, self.renewed_at, self.times, self.failures + 1)
        return trust, trust.next(now)
