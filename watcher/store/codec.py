"""JSON codecs for what the store keeps as text: events, session states and rule memory.

Pure functions, no database: every backend stores the same documents, and
the codecs are tested on their own. Stored text is always valid UTF-8
(unencodable text is replaced), and what older builds stored still loads.
The rule memory codec imports the rule engine only when it runs, so that
`outbox list` does not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from watcher.core.model import Event, EventType, Gone, SessionRef, SessionState, TokenUsage
from watcher.core.snapshot import (
    from_unix_ms,
    snapshot_from_dict,
    snapshot_to_dict,
    to_unix_ms,
)
from watcher.core.text import safe_json

if TYPE_CHECKING:
    from watcher.core.rulestate import SessionMemory


def _dumps(value: Any) -> str:
    # Text is made safe where it enters (API bodies, config); this keeps the
    # store's promise of valid UTF-8 even for a path that forgot.
    return json.dumps(safe_json(value), sort_keys=True)


def event_to_json(event: Event) -> str:
    """Serialise an event for the store (always valid UTF-8: unencodable text is replaced)."""
    session = event.session
    return _dumps(
        {
            "id": event.id,
            "type": str(event.type),
            "occurred_at": event.occurred_at.timestamp(),
            "session": None
            if session is None
            else {
                "id": session.id,
                "title": session.title,
                "status": session.status,
                "name": session.name,
                "labels": dict(session.labels),
                "url": session.url,
                "tags": list(session.tags),
                "model": session.model,
                **_session_facts(session),
            },
            "data": dict(event.data),
        }
    )


def event_from_json(text: str, sequence: int | None = 0) -> Event:
    """Inverse of `event_to_json`; `sequence` comes from the events table's own column.

    Events stored before API text was made safe on entry may hold lone
    surrogates; they are replaced here, so such an event still renders.
    """
    raw = safe_json(json.loads(text))
    session = raw["session"]
    return Event(
        id=raw["id"],
        type=EventType(raw["type"]),
        occurred_at=datetime.fromtimestamp(raw["occurred_at"], tz=UTC),
        session=None if session is None else _session_from_dict(session),
        data=raw["data"],
        sequence=sequence or 0,
    )


def _session_facts(session: SessionRef) -> dict[str, Any]:
    """The card facts of a session ref; absent ones are left out, as older rows have them."""
    facts: dict[str, Any] = {}
    if session.created_at is not None:
        facts["created_at"] = to_unix_ms(session.created_at)
    if session.message_count is not None:
        facts["message_count"] = session.message_count
    if session.active_ms is not None:
        facts["active_ms"] = session.active_ms
    if session.usage is not None:
        facts["usage"] = asdict(session.usage)
    return facts


def _session_from_dict(session: Mapping[str, Any]) -> SessionRef:
    """A stored session ref; rows written before the card facts existed lack them (None)."""
    known = {"id", "title", "status", "name", "labels", "url", "model", "message_count"}
    fields: dict[str, Any] = {k: v for k, v in session.items() if k in known}
    created = session.get("created_at")
    usage = session.get("usage")
    active = session.get("active_ms")
    return SessionRef(
        **fields,
        tags=tuple(session.get("tags", ())),
        created_at=None if created is None else from_unix_ms(created),
        active_ms=None if active is None else float(active),
        usage=None if usage is None else TokenUsage(**usage),
    )


def state_to_json(state: SessionState) -> str:
    """Serialise a session state (snapshot or gone) for the store."""
    if isinstance(state, Gone):
        last = None if state.last is None else snapshot_to_dict(state.last)
        return _dumps({"gone": True, "last": last})
    return _dumps({"gone": False, "snapshot": snapshot_to_dict(state)})


def state_from_json(session_id: str, text: str) -> SessionState:
    """Inverse of `state_to_json`."""
    raw = json.loads(text)
    if raw["gone"]:
        last = raw["last"]
        return Gone(session_id, None if last is None else snapshot_from_dict(last))
    return snapshot_from_dict(raw["snapshot"])


def memory_to_json(memory: SessionMemory) -> str:
    """Serialise a session's rule memory for the store."""
    from watcher.core.lifecycle import track_to_dict

    rules: dict[str, Any] = {}
    for name, rule in memory.rules.items():
        rules[name] = {
            "settling": [
                {
                    "event": json.loads(event_to_json(s.event)),
                    "epoch": s.epoch,
                    "due": to_unix_ms(s.due),
                }
                for s in rule.settling
            ],
            "episodes": {
                kind: {"since": to_unix_ms(e.since), "fired": e.fired}
                for kind, e in rule.episodes.items()
            },
            "crossed": sorted(rule.crossed),
            "last_sent": None if rule.last_sent is None else to_unix_ms(rule.last_sent),
        }
    track = None if memory.track is None else track_to_dict(memory.track)
    return json.dumps({"track": track, "rules": rules}, sort_keys=True)


def memory_from_json(text: str) -> SessionMemory:
    """Inverse of `memory_to_json`."""
    from watcher.core.lifecycle import track_from_dict
    from watcher.core.rulestate import Episode, RuleMemory, SessionMemory, Settling

    raw = json.loads(text)
    rules: dict[str, RuleMemory] = {}
    for name, rule in raw["rules"].items():
        rules[name] = RuleMemory(
            settling=tuple(
                Settling(
                    event_from_json(json.dumps(s["event"])), s["epoch"], from_unix_ms(s["due"])
                )
                for s in rule["settling"]
            ),
            episodes={
                kind: Episode(from_unix_ms(e["since"]), e["fired"])
                for kind, e in rule["episodes"].items()
            },
            crossed=frozenset(rule["crossed"]),
            last_sent=None if rule["last_sent"] is None else from_unix_ms(rule["last_sent"]),
        )
    track = raw["track"]
    return SessionMemory(None if track is None else track_from_dict(track), rules)
