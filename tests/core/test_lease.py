"""The leader's trust window and its next step (watcher.core.lease)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from watcher.core.lease import (
    Action,
    LeaseTimes,
    Next,
    Renewal,
    StepDown,
    Trust,
    send_timeout,
    standby_wait,
)

TIMES = LeaseTimes(ttl=10.0, renew_every=2.0, margin=1.0)


def trust(renewed_at: float = 100.0, failures: int = 0) -> Trust:
    """A trust of epoch 7 last renewed at `renewed_at`."""
    return Trust(7, renewed_at, TIMES, failures)


def test_lease_times_come_from_the_settings_durations() -> None:
    """Durations become seconds; retries come at a quarter and standby tries at half
    the renewal period."""
    times = LeaseTimes.of(timedelta(seconds=10), timedelta(seconds=2), timedelta(seconds=1))
    assert times == TIMES
    assert (times.retry_every, times.standby_every) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("target", "ttl", "expected"),
    [(10.0, 10.0, 5.0), (3.0, 10.0, 3.0), (10.0, 30.0, 10.0), (5.0, 10.0, 5.0)],
)
def test_send_timeout_is_the_targets_but_at_most_half_the_ttl(
    target: float, ttl: float, expected: float
) -> None:
    """In HA mode a send may take min(target timeout, ttl/2)."""
    assert send_timeout(target, ttl) == expected


@pytest.mark.parametrize(("jitter", "expected"), [(0.0, 0.75), (0.5, 1.0), (0.999, 1.2495)])
def test_standby_waits_about_half_the_renewal_period_with_jitter(
    jitter: float, expected: float
) -> None:
    """Standbys spread their tries over ±25% of renew_every/2."""
    assert standby_wait(TIMES, jitter) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("now", "left", "trusted"),
    [(100.0, 9.0, True), (108.999, 0.001, True), (109.0, 0.0, False), (120.0, -11.0, False)],
)
def test_trust_lasts_until_last_renewal_start_plus_ttl_minus_margin(
    now: float, left: float, trusted: bool
) -> None:
    """The window ends at renewed_at + ttl - margin, exclusive."""
    t = trust()
    assert t.until == 109.0
    assert t.left(now) == pytest.approx(left)
    assert t.trusted(now) is trusted


@pytest.mark.parametrize(
    ("now", "timeout", "allowed"),
    [(100.0, 5.0, True), (104.0, 5.0, True), (104.001, 5.0, False), (108.5, 0.5, True)],
)
def test_a_send_starts_only_when_the_window_holds_its_whole_timeout(
    now: float, timeout: float, allowed: bool
) -> None:
    """may_send needs at least `timeout` seconds of trust left."""
    assert trust().may_send(now, timeout) is allowed


@pytest.mark.parametrize(
    ("failures", "now", "expected"),
    [
        (0, 100.5, Next(Action.RENEW, 102.0)),
        (0, 103.0, Next(Action.RENEW, 103.0)),
        (2, 104.0, Next(Action.RENEW, 104.5)),
        (0, 109.0, Next(Action.STEP_DOWN, 109.0, StepDown.EXPIRED)),
        (3, 109.5, Next(Action.STEP_DOWN, 109.5, StepDown.CONNECTION)),
    ],
)
def test_next_step_renews_on_the_grid_retries_sooner_and_steps_down_past_the_window(
    failures: int, now: float, expected: Next
) -> None:
    """Renew every renew_every; after a failure, every retry_every; past the window,
    step down (connection when renewals failed, expired otherwise)."""
    assert trust(failures=failures).next(now) == expected


@pytest.mark.parametrize(
    ("before", "renewal", "started", "now", "after", "expected"),
    [
        (
            trust(),
            Renewal.RENEWED,
            102.0,
            102.1,
            trust(102.0),
            Next(Action.RENEW, 104.0),
        ),
        (
            trust(failures=2),
            Renewal.RENEWED,
            105.0,
            105.2,
            trust(105.0),
            Next(Action.RENEW, 107.0),
        ),
        (
            trust(104.0),
            Renewal.RENEWED,
            102.0,
            104.5,
            trust(104.0),
            Next(Action.RENEW, 106.0),
        ),
        (
            trust(),
            Renewal.FAILED,
            102.0,
            103.0,
            trust(failures=1),
            Next(Action.RENEW, 103.5),
        ),
        (
            trust(failures=4),
            Renewal.FAILED,
            108.0,
            109.2,
            trust(failures=5),
            Next(Action.STEP_DOWN, 109.2, StepDown.CONNECTION),
        ),
        (
            trust(),
            Renewal.LOST,
            102.0,
            102.1,
            trust(),
            Next(Action.STEP_DOWN, 102.1, StepDown.LOST),
        ),
        (
            trust(),
            Renewal.BROKEN,
            102.0,
            102.1,
            trust(),
            Next(Action.STEP_DOWN, 102.1, StepDown.CONNECTION),
        ),
    ],
)
def test_a_renewal_moves_the_window_to_its_start_or_counts_a_failure(
    before: Trust, renewal: Renewal, started: float, now: float, after: Trust, expected: Next
) -> None:
    """Renewed: the window restarts at the attempt's start (never earlier than it was);
    failed: counted, retried soon, stepped down past the window; lost or broken: step
    down now."""
    assert before.after(renewal, started, now) == (after, expected)
