"""Parsing API payloads into snapshots, and snapshots to and from stored JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from watcher.core.model import Snapshot, TokenUsage


class SnapshotError(ValueError):
    """A payload that cannot be read as a session; the poll counts as failed."""


def from_unix_ms(value: int | float) -> datetime:
    """Convert the API's Unix milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def to_unix_ms(value: datetime) -> int:
    """Convert an aware datetime back to Unix milliseconds."""
    return round(value.timestamp() * 1000)


def _required(payload: Mapping[str, Any], key: str, kind: Any) -> Any:
    value = payload.get(key)
    if value is None:
        raise SnapshotError(f"missing required field {key!r}")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SnapshotError(f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _optional_ms(payload: Mapping[str, Any], key: str) -> datetime | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return from_unix_ms(value)


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _optional_number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _number(payload: Mapping[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return value


def _token_usage(raw: Any) -> TokenUsage | None:
    if not isinstance(raw, Mapping):
        return None
    credits = raw.get("factoryCredits")
    return TokenUsage(
        input_tokens=_number(raw, "inputTokens"),
        output_tokens=_number(raw, "outputTokens"),
        cache_creation_tokens=_number(raw, "cacheCreationTokens"),
        cache_read_tokens=_number(raw, "cacheReadTokens"),
        thinking_tokens=_number(raw, "thinkingTokens"),
        factory_credits=credits
        if isinstance(credits, int | float) and not isinstance(credits, bool)
        else None,
    )


def parse_snapshot(payload: Any) -> Snapshot:
    """Read a `GET /api/v0/sessions/{id}` body tolerantly.

    Required fields must be present and typed as documented; unknown statuses,
    missing optional fields and extra fields are accepted.
    """
    if not isinstance(payload, Mapping):
        raise SnapshotError("response body is not a JSON object")
    settings = payload.get("sessionSettings")
    settings = settings if isinstance(settings, Mapping) else {}
    raw_tags = settings.get("tags")
    tags = tuple(
        tag["name"]
        for tag in (raw_tags if isinstance(raw_tags, list) else [])
        if isinstance(tag, Mapping) and isinstance(tag.get("name"), str)
    )
    message_count = _required(payload, "messageCount", (int, float))
    title = payload.get("title")
    return Snapshot(
        session_id=_required(payload, "sessionId", str),
        status=_required(payload, "status", str),
        message_count=int(message_count),
        created_at=from_unix_ms(_required(payload, "createdAt", (int, float))),
        updated_at=from_unix_ms(_required(payload, "updatedAt", (int, float))),
        title=title if isinstance(title, str) else "",
        completed_at=_optional_ms(payload, "completedAt"),
        archived_at=_optional_str(settings, "archivedAt"),
        computer_id=_optional_str(payload, "computerId"),
        tags=tags,
        token_usage=_token_usage(settings.get("tokenUsage")),
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


def snapshot_from_dict(data: Mapping[str, Any]) -> Snapshot:
    """Inverse of `snapshot_to_dict`."""
    usage = data.get("token_usage")
    completed = data.get("completed_at")
    return Snapshot(
        session_id=data["session_id"],
        status=data["status"],
        message_count=data["message_count"],
        created_at=from_unix_ms(data["created_at"]),
        updated_at=from_unix_ms(data["updated_at"]),
        title=data.get("title", ""),
        completed_at=None if completed is None else from_unix_ms(completed),
        archived_at=data.get("archived_at"),
        computer_id=data.get("computer_id"),
        tags=tuple(data.get("tags", ())),
        token_usage=None if usage is None else TokenUsage(**usage),
        model=data.get("model"),
        interaction_mode=data.get("interaction_mode"),
        autonomy_level=data.get("autonomy_level"),
        assistant_active_ms=data.get("assistant_active_ms"),
    )
