"""The retry policy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0
from watcher.core.message import FailureKind, SendFailed
from watcher.core.retry import MAX_DELAY, GiveUp, RetryAt, backoff, decide_retry, poll_backoff
from watcher.core.settings import DeliveryLimits

RETRYABLE = SendFailed(FailureKind.RETRYABLE, "HTTP 503")
LIMITS = DeliveryLimits(max_attempts=5, max_age=timedelta(hours=1))


@pytest.mark.parametrize(
    ("attempts", "jitter", "expected"),
    [
        (1, 0.5, 1.0),
        (2, 0.5, 2.0),
        (3, 1.0, 8.0),
        (30, 1.0, MAX_DELAY.total_seconds()),
        (500, 0.5, MAX_DELAY.total_seconds() / 2),
        (1, 0.0, 0.0),
    ],
)
def test_backoff_is_exponential_capped_with_full_jitter(
    attempts: int, jitter: float, expected: float
) -> None:
    """Delay is jitter x min(cap, 2s x 2^(n-1))."""
    assert backoff(attempts, jitter).total_seconds() == pytest.approx(expected)


def test_retryable_failure_is_retried_after_backoff() -> None:
    """A retryable failure waits the backoff and says why."""
    decision = decide_retry(RETRYABLE, attempts=2, created_at=T0, now=T0, limits=LIMITS, jitter=0.5)
    assert decision == RetryAt(T0 + timedelta(seconds=2), "backoff 2.0s after attempt 2: HTTP 503")


def test_retry_after_is_never_undercut() -> None:
    """A server's Retry-After longer than the backoff wins."""
    failure = SendFailed(FailureKind.RETRYABLE, "ratelimited", retry_after=timedelta(seconds=30))
    decision = decide_retry(failure, attempts=1, created_at=T0, now=T0, limits=LIMITS, jitter=0.9)
    assert isinstance(decision, RetryAt)
    assert decision.at == T0 + timedelta(seconds=30)
    assert "server asked to wait 30s" in decision.reason


def test_short_retry_after_does_not_shorten_backoff() -> None:
    """The backoff stands when it is longer than Retry-After."""
    failure = SendFailed(FailureKind.RETRYABLE, "x", retry_after=timedelta(seconds=1))
    decision = decide_retry(failure, attempts=4, created_at=T0, now=T0, limits=LIMITS, jitter=1.0)
    assert isinstance(decision, RetryAt)
    assert decision.at == T0 + timedelta(seconds=16)


@pytest.mark.parametrize(
    ("failure", "attempts", "age", "reason"),
    [
        (
            SendFailed(FailureKind.PERMANENT, "invalid_auth"),
            1,
            timedelta(0),
            "permanent failure: invalid_auth",
        ),
        (RETRYABLE, 5, timedelta(0), "gave up after 5 attempts: HTTP 503"),
        (RETRYABLE, 2, timedelta(minutes=59, seconds=59), "older than max_age (3600s)"),
    ],
)
def test_give_up(failure: SendFailed, attempts: int, age: timedelta, reason: str) -> None:
    """Permanent failures, too many attempts and too old notifications become dead letters."""
    decision = decide_retry(
        failure, attempts=attempts, created_at=T0, now=T0 + age, limits=LIMITS, jitter=1.0
    )
    assert isinstance(decision, GiveUp)
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        (0, 1.0, 30.0),
        (1, 0.0, 30.0),
        (1, 1.0, 60.0),
        (2, 0.0, 60.0),
        (20, 1.0, 300.0),
        (20, 0.0, 150.0),
    ],
)
def test_poll_backoff_doubles_with_equal_jitter(
    failures: int, jitter: float, expected: float
) -> None:
    """Failed polls back off from the interval to a 5 minute cap, half of it jittered."""
    delay = poll_backoff(failures, timedelta(seconds=30), jitter)
    assert delay.total_seconds() == pytest.approx(expected)
