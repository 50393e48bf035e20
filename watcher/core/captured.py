"""An event read back from a webhook body (`factory-watcher render --event FILE.json`).

The body is what `render.webhook_payload` writes (`type`, `id`, `occurred_at`,
`rule`, `session`, `data`, and from v1 `version` and `sequence`), so a body
captured at a receiver can be replayed through a template.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from watcher.core.model import Event, EventType, SessionRef
from watcher.core.samples import SAMPLE_NOW
from watcher.core.text import safe_json

KNOWN_VERSIONS = (1,)


class EventBodyError(ValueError):
    """A body that is not an event; the message names the key and what was expected."""


def _text(body: dict[str, Any], key: str, where: str, *, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, str):
        raise EventBodyError(f"{where}{key}: expected a string")
    return value


def _time(value: Any) -> datetime:
    if value is None:
        return SAMPLE_NOW
    if not isinstance(value, str):
        raise EventBodyError("occurred_at: expected an ISO 8601 time such as 2026-01-15T14:30:00Z")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventBodyError(
            "occurred_at: expected an ISO 8601 time such as 2026-01-15T14:30:00Z"
        ) from None
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
    return SessionRef(
        id=session_id,
        title=_text(value, "title", "session.") or "",
        status=_text(value, "status", "session.") or "",
        name=_text(value, "name", "session."),
        labels={str(k): v for k, v in labels.items()},
        url=_text(value, "url", "session."),
        tags=tuple(tags),
        model=_text(value, "model", "session."),
    )


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
