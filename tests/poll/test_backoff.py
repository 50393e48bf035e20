"""Backoff: pauses per key after failures, the API-wide Retry-After pause, and their end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.poll import FetchFailed, FetchFailureKind
from watcher.poll.backoff import Backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(seconds=10)
S = timedelta(seconds=1)


def failure(status: int | None = 500, retry_after: int | None = None) -> FetchFailed:
    """A retryable failure with `status` and an optional Retry-After in seconds."""
    after = None if retry_after is None else timedelta(seconds=retry_after)
    return FetchFailed(FetchFailureKind.RETRYABLE, "boom", retry_after=after, status=status)


# (failures of "s1" at T0, seconds "s1" waits, whether "other" waits too, and how long)
CASES = [
    ("one failure: one doubled interval", [failure()], 20, 0),
    ("two in a row: doubled again", [failure(), failure()], 40, 0),
    ("a longer Retry-After wins", [failure(503, 60)], 60, 0),
    ("a 429 pauses the key and the whole API", [failure(429, 30)], 30, 30),
    ("a 429 without Retry-After pauses nothing", [failure(429)], 0, 0),
    ("a transport failure (no status)", [failure(None)], 20, 0),
]


@pytest.mark.parametrize(
    ("failures", "waits", "others_wait"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_failures_hold_back_their_key(
    failures: list[FetchFailed], waits: int, others_wait: int
) -> None:
    """A key waits its backoff (jitter at its top); only a 429's Retry-After holds back all."""
    backoff = Backoff(lambda: 1.0)
    for failed in failures:
        backoff.failed("s1", INTERVAL, failed, T0)
    if waits:
        assert not backoff.allowed("s1", T0 + waits * S - S)
    assert backoff.allowed("s1", T0 + waits * S)
    if others_wait:
        assert not backoff.allowed("other", T0 + others_wait * S - S)
    assert backoff.allowed("other", T0 + others_wait * S)


def test_a_success_ends_the_streak_but_not_a_retry_after() -> None:
    """Success lifts a failure's pause; a 429's pause runs out on its own (or by `forget`)."""
    backoff = Backoff(lambda: 1.0)
    backoff.failed("s1", INTERVAL, failure(), T0)
    backoff.failed("s2", INTERVAL, failure(429, 30), T0)
    backoff.succeeded("s1")
    backoff.succeeded("s2")
    assert backoff.allowed("s1", T0 + 31 * S)
    assert backoff.paused_until.get("s2") == T0 + 30 * S
    backoff.forget("s2")
    assert "s2" not in backoff.paused_until
    backoff.failed("s1", INTERVAL, failure(), T0)
    assert backoff.failures == {"s1": 1}  # the streak started over


def test_a_recovery_resets_every_key_and_the_api_pause() -> None:
    """After a declared outage every key is allowed at once."""
    backoff = Backoff(lambda: 0.0)
    backoff.failed("s1", INTERVAL, failure(), T0)
    backoff.failed("s2", INTERVAL, failure(429, 300), T0)
    backoff.reset()
    assert backoff.allowed("s1", T0)
    assert backoff.allowed("s2", T0)
    assert (backoff.failures, backoff.paused_until, backoff.api_paused_until) == ({}, {}, None)


@pytest.mark.parametrize(
    ("due", "paused", "expected"),
    [
        (None, None, None),
        (T0, None, T0),
        (T0, 30, T0 + 30 * S),
        (T0 + 60 * S, 30, T0 + 60 * S),
        (None, 30, T0 + 30 * S),
    ],
)
def test_the_next_poll_is_the_later_of_its_slot_and_its_pause(
    due: datetime | None, paused: int | None, expected: datetime | None
) -> None:
    """`resume_at` is what `status` shows as the next poll."""
    backoff = Backoff(lambda: 1.0)
    if paused is not None:
        backoff.failed("s1", INTERVAL, failure(429, paused), T0)
    assert backoff.resume_at("s1", due) == expected
