"""The scalar values of a config file: durations and jitter, and why a value is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from watcher.config.values import parse_duration, parse_jitter


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("45", timedelta(seconds=45)),
        (45, timedelta(seconds=45)),
    ],
)
def test_duration_forms(given: str | int, expected: timedelta) -> None:
    """Durations are a whole number with ms/s/m/h/d, or a plain number of seconds."""
    assert parse_duration(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("1.5s", "expected a duration such as"),
        ("5 m", "expected a duration such as"),
        ("1w", "expected a duration such as"),
        ("-1s", "expected a duration such as"),
        ("", "expected a duration such as"),
        (True, "expected a duration such as"),
        ("0ms", "duration must be longer than 0"),
        (0, "duration must be longer than 0"),
        ("9" * 30 + "d", "duration is too long"),
    ],
)
def test_duration_errors_say_what_is_expected(given: str | int, message: str) -> None:
    """Anything but a positive whole amount with a known unit is refused, with a reason."""
    with pytest.raises(ValueError, match=message):
        parse_duration(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("10%", 0.1), ("0%", 0.0), ("50%", 0.5), ("12.5%", 0.125), ("0.2", 0.2), (0.25, 0.25)],
)
def test_jitter_forms(given: str | float, expected: float) -> None:
    """Jitter is a percentage string or a fraction, stored as a fraction."""
    assert parse_jitter(given) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("51%", "between 0% and 50%"),
        ("-1%", "between 0% and 50%"),
        ("0.6", "fraction from 0 to 0.5"),
        (10, r"write '10%' for a percentage"),
        ("lots", "expected a percentage"),
        ("nan", "expected a percentage"),
        ("inf%", "expected a percentage"),
    ],
)
def test_jitter_errors(given: str | float, message: str) -> None:
    """Jitter outside 0..50% or not a number is refused."""
    with pytest.raises(ValueError, match=message):
        parse_jitter(given)
