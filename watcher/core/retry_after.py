"""Parsing of the HTTP `Retry-After` header (delta-seconds or an HTTP date)."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = timedelta(hours=1)


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Return how long to wait per a `Retry-After` value, or None when absent or malformed.

    Dates in the past give zero; waits are capped at an hour so a broken proxy
    cannot park a notification for days.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # Past nine digits the wait is far beyond the cap, and int()/timedelta
        # would be slow or overflow on a hostile value.
        if len(text) > 9:
            return MAX_RETRY_AFTER
        return min(timedelta(seconds=int(text)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when - now, timedelta(0)), MAX_RETRY_AFTER)
