"""Parsing API payloads into snapshots, and snapshots to and from stored JSON.

Every body the API sends either becomes a `Snapshot` or raises `SnapshotError`
with a one-line reason naming the field: nothing in a body can make parsing
raise anything else, and no value that a snapshot cannot hold faithfully (a
timestamp outside what a `datetime` holds, NaN, a negative count, text that
cannot be encoded) gets into one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from watcher.core.model import Snapshot, TokenUsage
from watcher.core.text import safe_text

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps are accepted from the epoch to the start of year 9999: a year of
# headroom below datetime.max keeps every later `+ interval` representable.
MIN_MS = 0
MAX_MS = (datetime(9999, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
# Counters beyond a signed 64-bit integer are no counter any real session has.
MAX_COUNT = 2**63 - 1

_TOKEN_FIELDS = (
    ("inputTokens", "input_tokens"),
    ("outputTokens", "output_tokens"),
    ("cacheCreationTokens", "cache_creation_tokens"),
    ("cacheReadTokens", "cache_read_tokens"),
    ("thinkingTokens", "thinking_tokens"),
)


class SnapshotError(ValueError):
    """A payload that cannot be read as a session; the poll counts as failed."""


def from_unix_ms(value: int | float) -> datetime:
    """Convert Unix milliseconds to an aware UTC datetime (exact for whole milliseconds)."""
    return EPOCH + timedelta(milliseconds=value)


def to_unix_ms(value: datetime) -> int:
    """Convert an aware datetime back to Unix milliseconds."""
    return round(value.timestamp() * 1000)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: int | float, name: str) -> int | float:
    if isinstance(value, float) and not math.isfinite(value):
        raise SnapshotError(f"{name} is not a finite number")
    return value


def _required(payload: Mapping[str, Any], key: str, kind: Any) -> Any:
    value = payload.get(key)
    if value is None:
        raise SnapshotError(f"missing required field {key!r}")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SnapshotError(f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _timestamp(value: int | float, name: str) -> datetime:
    _finite(value, name)
    if not MIN_MS <= value <= MAX_MS:
        raise SnapshotError(f"{name} out of range (Unix milliseconds from 1970 to 9999 expected)")
    # Whole milliseconds, as documented: a fractional one would not survive the
    # store's round trip, and the stored snapshot would differ from every poll.
    return from_unix_ms(round(value))


def _optional_ms(payload: Mapping[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    if not _is_number(value):
        return None
    return _timestamp(value, key)


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return safe_text(value) if isinstance(value, str) else None


def _message_count(payload: Mapping[str, Any]) -> int:
    value = _finite(_required(payload, "messageCount", (int, float)), "messageCount")
    if isinstance(value, float) and not value.is_integer():
        raise SnapshotError("messageCount is not a whole number")
    if value < 0:
        raise SnapshotError("messageCount is negative")
    if value > MAX_COUNT:
        raise SnapshotError("messageCount out of range")
    return int(value)


def _token_number(raw: Mapping[str, Any], key: str, name: str) -> int | float | None:
    value = raw.get(key)
    if not _is_number(value):
        return None  # absent or of an unknown shape: tolerated, like any optional field
    _finite(value, f"{name}.{key}")
    if abs(value) > MAX_COUNT:
        raise SnapshotError(f"{name}.{key} out of range")
    return value


def _optional_number(payload: Mapping[str, Any], key: str) -> int | float | None:
    """An optional counter: absent or mistyped reads as unknown; NaN or huge is an error."""
    value = payload.get(key)
    if not _is_number(value):
        return None
    _finite(value, key)
    if abs(value) > MAX_COUNT:
        raise SnapshotError(f"{key} out of range")
    return value


def _token_usage(raw: Any, name: str) -> TokenUsage | None:
    if not isinstance(raw, Mapping):
        return None
    counters = {attr: _token_number(raw, key, name) or 0 for key, attr in _TOKEN_FIELDS}
    return TokenUsage(**counters, factory_credits=_token_number(raw, "factoryCredits", name))


def _tags(settings: Mapping[str, Any]) -> tuple[str, ...]:
    raw = settings.get("tags")
    if not isinstance(raw, list):
        return ()
    return tuple(
        safe_text(tag["name"])
        for tag in raw
        if isinstance(tag, Mapping) and isinstance(tag.get("name"), str)
    )


def parse_snapshot(payload: Any) -> Snapshot:
    """Read a `GET /api/v0/sessions/{id}` body tolerantly, or raise `SnapshotError`.

    Required fields must be present and typed as documented; unknown statuses,
    missing optional fields, optional fields of an unknown shape and extra
    fields are accepted. Any number that is read must be finite and in range.
    """
    if not isinstance(payload, Mapping):
        raise SnapshotError("response body is not a JSON object")
    settings = payload.get("sessionSettings")
    settings = settings if isinstance(settings, Mapping) else {}
    title = payload.get("title")
    return Snapshot(
        session_id=safe_text(_required(payload, "sessionId", str)),
        status=safe_text(_required(payload, "status", str)),
        message_count=_message_count(payload),
        created_at=_timestamp(_required(payload, "createdAt", (int, float)), "createdAt"),
        updated_at=_timestamp(_required(payload, "updatedAt", (int, float)), "updatedAt"),
        title=safe_text(title) if isinstance(title, str) else "",
        completed_at=_optional_ms(payload, "completedAt"),
        archived_at=_optional_str(settings, "archivedAt"),
        computer_id=_optional_str(payload, "computerId"),
        tags=_tags(settings),
        token_usage=_token_usage(settings.get("tokenUsage"), "tokenUsage"),
        model=_optional_str(settings, "model"),
        interaction_mode=_optional_str(settings, "interactionMode"),
        autonomy_level=_optional_str(settings, "autonomyLevel"),
        assistant_active_ms=_optional_number(settings, "assistantActiveTimeMs"),
    )


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """Serialise a snapshot for the state store (datetimes as Unix ms)."""
    data = asdict(snapshot)
    for key in ("created_at", "updated_at", "completed_at"):
        value = data[key]
        data[key] = None if value is None else to_unix_ms(value)
    data["tags"] = list(snapshot.tags)
    return data


def _stored_text(value: Any) -> Any:
    # Snapshots stored before text was made safe on entry may hold lone surrogates.
    return safe_text(value) if isinstance(value, str) else value


def snapshot_from_dict(data: Mapping[str, Any]) -> Snapshot:
    """Inverse of `snapshot_to_dict`."""
    usage = data.get("token_usage")
    completed = data.get("completed_at")
    return Snapshot(
        session_id=_stored_text(data["session_id"]),
        status=_stored_text(data["status"]),
        message_count=data["message_count"],
        created_at=from_unix_ms(data["created_at"]),
        updated_at=from_unix_ms(data["updated_at"]),
        title=_stored_text(data.get("title", "")),
        completed_at=None if completed is None else from_unix_ms(completed),
        archived_at=_stored_text(data.get("archived_at")),
        computer_id=_stored_text(data.get("computer_id")),
        tags=tuple(_stored_text(tag) for tag in data.get("tags", ())),
        token_usage=None if usage is None else TokenUsage(**usage),
        model=data.get("model"),
        interaction_mode=data.get("interaction_mode"),
        autonomy_level=data.get("autonomy_level"),
        assistant_active_ms=data.get("assistant_active_ms"),
    )
