"""The request budget's token bucket: spreading, 429 cuts, Retry-After, the climb back."""

from __future__ import annotations

import itertools

import pytest

from watcher.core.budget import (
    CLIMB_PER_SECOND,
    TokenBucket,
    current_rate,
    give_back,
    refill,
    take,
    throttled,
    with_ceiling,
)


def drain(bucket: TokenBucket, now: float, count: int) -> tuple[TokenBucket, list[float]]:
    """Take `count` tokens as a patient caller would; returns the times each was granted."""
    granted: list[float] = []
    for _ in range(count):
        while True:
            grant = take(bucket, now)
            bucket = grant.bucket
            if grant.wait <= 0:
                granted.append(now)
                break
            now += grant.wait
    return bucket, granted


def test_a_crowd_is_spread_at_the_rate() -> None:
    """A full bucket of rate 10 grants a small burst, then one token every 0.1 s."""
    _, granted = drain(TokenBucket.full(10, 0.0), 0.0, 12)
    assert granted[:2] == [0.0, 0.0]  # the burst: a quarter second's worth
    gaps = [b - a for a, b in itertools.pairwise(granted[2:])]
    assert gaps == pytest.approx([0.1] * len(gaps))
    assert granted[-1] == pytest.approx(0.95)  # 2.5 saved tokens, then 0.1 s each


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(10.0, 2), (100.0, 25), (1.0, 1), (0.5, 1)],
)
def test_the_burst_is_a_quarter_second_of_tokens_but_at_least_one(rate: float, burst: int) -> None:
    """Saved-up tokens never exceed max(1, rate / 4)."""
    bucket = refill(TokenBucket.full(rate, 0.0), 1000.0)
    _, granted = drain(bucket, 1000.0, burst + 1)
    assert granted.count(1000.0) == burst


def test_a_429_halves_the_rate_once_for_requests_in_flight_together() -> None:
    """Several 429s within a second are one cut; a later one cuts again, never below the floor."""
    bucket = TokenBucket.full(16, 0.0)
    for _ in range(5):
        bucket = throttled(bucket, 0.5, None)
    assert bucket.rate == 8
    assert bucket.tokens <= 0
    bucket = throttled(bucket, 1.6, None)
    assert bucket.rate == pytest.approx(
        (8 + 16 * CLIMB_PER_SECOND * 1.1) / 2
    )  # climbed a little, then halved
    near_floor = TokenBucket(ceiling=16, rate=0.3, tokens=0, at=10.0)
    assert throttled(near_floor, 10.0, None).rate == pytest.approx(16 / 64)


def test_retry_after_pauses_every_request() -> None:
    """Nothing is granted until Retry-After has passed."""
    bucket = throttled(TokenBucket.full(10, 0.0), 0.0, 2.0)
    grant = take(bucket, 1.0)
    assert grant.wait == pytest.approx(1.0)
    assert "Retry-After" in grant.reason
    assert take(bucket, 2.5).wait == 0  # tokens earned since at the lowered rate


def test_the_rate_climbs_back_gradually_to_the_ceiling() -> None:
    """After a cut the rate climbs linearly and stops at the configured rate."""
    bucket = throttled(TokenBucket.full(12, 0.0), 0.0, None)
    assert current_rate(bucket, 0.0) == 6
    assert current_rate(bucket, 10.0) == pytest.approx(6 + 12 * CLIMB_PER_SECOND * 10)
    assert current_rate(bucket, 1000.0) == 12
    assert refill(bucket, 1000.0).rate == 12


def test_give_back_and_a_new_ceiling() -> None:
    """An unused token returns; a reload lowers the ceiling and keeps a lowered rate."""
    bucket, _ = drain(TokenBucket.full(4, 0.0), 0.0, 1)
    assert give_back(bucket).tokens == bucket.tokens + 1
    lowered = with_ceiling(TokenBucket.full(20, 0.0), 5, 0.0)
    assert (lowered.ceiling, lowered.rate) == (5, 5)
    cut = throttled(TokenBucket.full(20, 0.0), 0.0, None)
    assert with_ceiling(cut, 40, 0.0).rate == 10
