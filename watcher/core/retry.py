"""The one retry policy: what the outbox does after a failed send."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.message import FailureKind, SendFailed
from watcher.core.settings import DeliveryLimits

BASE_DELAY = timedelta(seconds=2)
MAX_DELAY = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at `at`; `reason` says why it waits that long."""

    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Keep the notification as a dead letter; `reason` is its last error and the cause."""

    reason: str


RetryDecision = RetryAt | GiveUp


def backoff(attempts: int, jitter: float) -> timedelta:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(n-1))].

    `jitter` is a number in [0, 1) drawn by the caller, so this stays pure.
    """
    exponent = min(max(attempts - 1, 0), 30)
    ceiling = min(MAX_DELAY, BASE_DELAY * (2**exponent))
    return timedelta(seconds=ceiling.total_seconds() * jitter)


def decide_retry(
    failure: SendFailed,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    limits: DeliveryLimits,
    jitter: float,
) -> RetryDecision:
    """Decide the fate of a notification whose `attempts`-th send just failed.

    A `Retry-After` is never undercut: the wait is the larger of it and the backoff.
    """
    if failure.kind is FailureKind.PERMANENT:
        return GiveUp(f"permanent failure: {failure.reason}")
    if attempts >= limits.max_attempts:
        return GiveUp(f"gave up after {attempts} attempts: {failure.reason}")
    wait = backoff(attempts, jitter)
    if failure.retry_after is not None and failure.retry_after > wait:
        wait = failure.retry_after
        why = f"server asked to wait {failure.retry_after.total_seconds():g}s"
    else:
        why = f"backoff {wait.total_seconds():.1f}s after attempt {attempts}"
    at = now + wait
    if at - created_at > limits.max_age:
        age = limits.max_age.total_seconds()
        return GiveUp(f"older than max_age ({age:g}s) before it could be sent: {failure.reason}")
    return RetryAt(at, f"{why}: {failure.reason}")


POLL_BACKOFF_CAP = timedelta(minutes=5)


def poll_backoff(
    failures: int, interval: timedelta, jitter: float, cap: timedelta = POLL_BACKOFF_CAP
) -> timedelta:
    """How long a session's polling pauses after `failures` failed polls in a row.

    Doubles from the poll interval up to `cap`, with "equal jitter" (half fixed,
    half random) so a recovering API is not hit by every session at once, yet
    polling never runs faster than its normal interval.
    """
    exponent = min(max(failures, 0), 30)
    ceiling = min(cap, interval * (2**exponent))
    ceiling = max(ceiling, interval)
    return timedelta(seconds=ceiling.total_seconds() * (0.5 + jitter / 2))
