"""The request budget's arithmetic: a token bucket whose rate halves on a 429 and climbs back.

Times are plain seconds on any monotonic clock; the shell owns the clock and
the sleeping. Waiting callers reserve tokens in turn, so a crowd of due
requests is spread at the current rate instead of fired at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Burst: at most this many seconds' worth of tokens are saved up while quiet.
BURST_SECONDS = 0.25
# After a 429 the rate climbs back linearly: this fraction of the ceiling per second.
CLIMB_PER_SECOND = 1 / 60
# The rate never drops below this fraction of the ceiling.
FLOOR_FRACTION = 1 / 64
# Requests in flight together often meet the same 429: one cut per this many seconds.
CUT_SPACING = 1.0


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """The budget at time `at`: `rate` now (<= `ceiling`), saved `tokens`, any pause."""

    ceiling: float
    rate: float
    tokens: float
    at: float
    paused_until: float = 0.0
    last_cut: float = float("-inf")

    @classmethod
    def full(cls, ceiling: float, now: float) -> TokenBucket:
        """A bucket at its configured rate with a full burst."""
        return cls(ceiling, ceiling, _capacity(ceiling), now)


@dataclass(frozen=True, slots=True)
class Grant:
    """The bucket after a request asked for a token; `wait` > 0 means ask again then."""

    bucket: TokenBucket
    wait: float
    reason: str


def _capacity(rate: float) -> float:
    return max(1.0, rate * BURST_SECONDS)


def current_rate(bucket: TokenBucket, now: float) -> float:
    """The rate at `now`: a lowered rate climbs back towards the ceiling over time."""
    if bucket.rate >= bucket.ceiling:
        return bucket.ceiling
    elapsed = max(0.0, now - bucket.at)
    return min(bucket.ceiling, bucket.rate + bucket.ceiling * CLIMB_PER_SECOND * elapsed)


def refill(bucket: TokenBucket, now: float) -> TokenBucket:
    """The bucket brought forward to `now`: tokens earned at the (climbing) rate since `at`."""
    if now <= bucket.at:
        return bucket
    rate = current_rate(bucket, now)
    # The rate climbed linearly: the tokens earned are the mean rate times the time.
    earned = (bucket.rate + rate) / 2 * (now - bucket.at)
    tokens = min(_capacity(rate), bucket.tokens + earned)
    return replace(bucket, rate=rate, tokens=tokens, at=now)


def take(bucket: TokenBucket, now: float) -> Grant:
    """Take one token if there is one; otherwise say how long until there will be."""
    if now < bucket.paused_until:
        return Grant(bucket, bucket.paused_until - now, "the API asked to wait (Retry-After)")
    current = refill(bucket, now)
    # Tolerance: a caller that slept exactly the wait asked for must get its token.
    if current.tokens >= 1 - 1e-6:
        return Grant(replace(current, tokens=current.tokens - 1), 0.0, "within budget")
    wait = (1 - current.tokens) / current.rate
    return Grant(current, wait, f"budget of {current.rate:.2f} requests/s spent")


def give_back(bucket: TokenBucket) -> TokenBucket:
    """Return an unused token (the request it was taken for is no longer needed)."""
    return replace(bucket, tokens=min(_capacity(bucket.rate), bucket.tokens + 1))


def throttled(bucket: TokenBucket, now: float, retry_after: float | None) -> TokenBucket:
    """The API answered 429: halve the rate, drop saved tokens, honour `Retry-After`.

    Answers to requests that were in flight together count as one cut.
    """
    current = refill(bucket, now)
    paused = bucket.paused_until
    if retry_after is not None:
        paused = max(paused, now + retry_after)
    rate, last_cut = current.rate, bucket.last_cut
    if now - bucket.last_cut >= CUT_SPACING:
        rate, last_cut = max(bucket.ceiling * FLOOR_FRACTION, current.rate / 2), now
    return replace(
        current, rate=rate, tokens=min(current.tokens, 0.0), paused_until=paused, last_cut=last_cut
    )


def with_ceiling(bucket: TokenBucket, ceiling: float, now: float) -> TokenBucket:
    """The bucket under a new configured rate (reload); a lowered rate stays lowered."""
    current = refill(bucket, now)
    return replace(current, ceiling=ceiling, rate=min(current.rate, ceiling))
