"""An event read back from a webhook body (`factory-watcher render --event FILE.json`).

The body is what `render.webhook_payload` writes (`type`, `id`, `occurred_at`,
`rule`, `session`, `data`, and from v1 `version` and `sequence`; a digest's
body lists its events instead), so a body captured at a receiver can be
replayed through a template or a card.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from watcher.core.model import Event, EventType, SessionRef, TokenUsage
from watcher.core.samples import SAMPLE_NOW
from watcher.core.text import safe_json

KNOWN_VERSIONS = (1,)
DIGEST_BODY_TYPE = "digest"  # render.digest_payload
REPORT_BODY_TYPE = "report"  # render.body_type


class EventBodyError(ValueError):
    """A body that is not an event; the message names the key and what was expected."""


def _text(body: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise EventBodyError(f"{where}{key}: expected a string")
    return value


def _time(value: Any, where: str = "occurred_at") -> datetime:
    if value is None:
        return SAMPLE_NOW
    expected = f"{where}: expected an ISO 8601 time such as 2026-01-15T14:30:00Z"
    if not isinstance(value, str):
        raise EventBodyError(expected)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventBodyError(expected) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _session(value: Any) -> SessionRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventBodyError("session: expected an object or null")
    session_id = _text(value, "id", "session.")
    if not session_id:
        raise EventBodyError("session.id: expected a non-empty string")
    labels = value.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise EventBodyError("session.labels: expected an object of strings")
    tags = value.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise EventBodyError("session.tags: expected a list of strings")
    created = value.get("created_at")
    return SessionRef(
        id=session_id,
        title=_text(value, "title", "session.") or "",
        status=_text(value, "status", "session.") or "",
        name=_text(value, "name", "session."),
        labels={str(k): v for k, v in labels.items()},
        url=_text(value, "url", "session."),
        tags=tuple(tags),
        model=_text(value, "model", "session."),
        created_at=None if created is None else _time(created, "session.created_at"),
        message_count=_count(value.get("message_count"), "session.message_count"),
        active_ms=None
        if (active := _amount(value.get("active_s"), "session.active_s")) is None
        else active * 1000,
        usage=_usage(value.get("usage")),
    )


def _amount(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise EventBodyError(f"{where}: expected a number, 0 or more")
    return float(value)


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventBodyError(f"{where}: expected a whole number, 0 or more")
    return value


# The token counters of a body's `session.usage` (render writes `asdict(TokenUsage)`).
USAGE_KEYS = tuple(f.name for f in fields(TokenUsage) if f.name != "factory_credits")


def _usage(value: Any) -> TokenUsage | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventBodyError("session.usage: expected an object of token counters")
    counters = {key: _amount(value.get(key), f"session.usage.{key}") or 0.0 for key in USAGE_KEYS}
    credits = value.get("factory_credits")
    if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int | float)):
        raise EventBodyError("session.usage.factory_credits: expected a number or null")
    return TokenUsage(**counters, factory_credits=credits)


def _digest_data(body: dict[str, Any]) -> dict[str, Any]:
    """A digest body's `data` as the watcher keeps it: its events become `items`."""
    events = body.get("events")
    if not isinstance(events, list):
        raise EventBodyError("events: expected the list of events the digest holds")
    items = []
    for n, listed in enumerate(events):
        if not isinstance(listed, dict):
            raise EventBodyError(f"events[{n}]: expected an event object")
        try:
            event_from_body(listed)
        except EventBodyError as error:
            raise EventBodyError(f"events[{n}].{error}") from None
        items.append({key: listed.get(key) for key in DIGEST_ITEM_KEYS if key in listed})
    data = body.get("data")
    shown = data if isinstance(data, dict) else {}
    return {"window": shown.get("window", ""), "count": len(items), "items": items}


DIGEST_ITEM_KEYS = ("id", "type", "sequence", "rule", "occurred_at", "session", "data")


def event_from_body(body: Any) -> Event:
    """The event a webhook body describes; raises EventBodyError naming what is wrong."""
    if not isinstance(body, dict):
        raise EventBodyError("expected a JSON object (an event as a webhook body carries it)")
    body = safe_json(body)
    version = body.get("version", 1)
    if isinstance(version, bool) or version not in KNOWN_VERSIONS:
        raise EventBodyError(f"version: expected one of {', '.join(map(str, KNOWN_VERSIONS))}")
    kind = body.get("type")
    if not isinstance(kind, str):
        raise EventBodyError("type: expected an event type such as session.finished")
    if kind == DIGEST_BODY_TYPE:
        kind = str(EventType.DIGEST)
        body = {**body, "data": _digest_data(body)}
    elif kind == REPORT_BODY_TYPE:
        kind = str(EventType.REPORT)
    try:
        event_type = EventType(kind)
    except ValueError:
        raise EventBodyError(f"type: unknown event type '{kind}'") from None
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventBodyError("data: expected an object")
    sequence = body.get("sequence", 0)
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise EventBodyError("sequence: expected a whole number, 0 or more")
    return Event(
        id=_text(body, "id", "", default="evt-replayed") or "evt-replayed",
        type=event_type,
        occurred_at=_time(body.get("occurred_at")),
        session=_session(body.get("session")),
        data=data,
        sequence=sequence,
    )
