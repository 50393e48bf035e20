"""Parsing Retry-After."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0
from watcher.core.retry_after import MAX_RETRY_AFTER, parse_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("7", timedelta(seconds=7)),
        ("0", timedelta(0)),
        ("999999", MAX_RETRY_AFTER),
        ("Sat, 28 Nov 2026 12:00:30 GMT", timedelta(seconds=30)),
        ("Sat, 28 Nov 2026 11:00:00 GMT", timedelta(0)),
        ("Sat, 28 Nov 2026 12:00:30", None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    """Seconds and HTTP dates are understood; junk is ignored; waits are capped."""
    assert parse_retry_after(value, T0) == expected
