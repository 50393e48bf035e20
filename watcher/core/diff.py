"""Diffing two states of one session into events (the v1 catalog)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime

from watcher.core.lifecycle import RunStart, run_baseline, run_summary
from watcher.core.model import Event, EventType, Gone, JSONValue, SessionRef, SessionState, Snapshot
from watcher.core.settings import WatchedSession
from watcher.core.snapshot import to_unix_ms


def event_id(session_id: str, event_type: EventType, cause: Mapping[str, JSONValue]) -> str:
    """A stable id: the same transition seen twice gets the same id, a later one a new id."""
    material = json.dumps([session_id, str(event_type), cause], sort_keys=True, default=str)
    return "evt_" + hashlib.sha256(material.encode()).hexdigest()[:32]


def session_ref(
    watched: WatchedSession, snapshot: Snapshot | None, session_url: str | None
) -> SessionRef:
    """Describe a session for messages, from its config entry and its latest snapshot."""
    url = session_url.replace("{id}", watched.id) if session_url else None
    return SessionRef(
        id=watched.id,
        title=snapshot.title if snapshot else "",
        status=snapshot.status if snapshot else "",
        name=watched.name,
        labels=dict(watched.labels),
        url=url,
        tags=snapshot.tags if snapshot else (),
        model=snapshot.model if snapshot else None,
        created_at=snapshot.created_at if snapshot else None,
        message_count=snapshot.message_count if snapshot else None,
        active_ms=snapshot.assistant_active_ms if snapshot else None,
        usage=snapshot.token_usage if snapshot else None,
    )


def _event(
    ref: SessionRef,
    kind: EventType,
    occurred_at: datetime,
    cause: Mapping[str, JSONValue],
    data: Mapping[str, JSONValue],
) -> Event:
    return Event(
        id=event_id(ref.id, kind, cause),
        type=kind,
        occurred_at=occurred_at,
        session=ref,
        data=dict(data),
    )


def _snapshot_events(
    previous: Snapshot, current: Snapshot, ref: SessionRef, run_start: RunStart | None
) -> list[Event]:
    events: list[Event] = []
    at = current.updated_at
    updated = to_unix_ms(current.updated_at)
    if current.status != previous.status:
        change = {"from": previous.status, "to": current.status}
        events.append(
            _event(ref, EventType.STATUS_CHANGED, at, {**change, "updated_at": updated}, change)
        )
    if current.completed_at is not None and current.completed_at != previous.completed_at:
        completed_ms = to_unix_ms(current.completed_at)
        duration = (current.completed_at - current.created_at).total_seconds()
        data: dict[str, JSONValue] = {
            "completed_at": current.completed_at.isoformat(),
            "duration_s": duration,
        }
        # Without a run the lifecycle followed, the run happened between two polls.
        start = run_start or run_baseline(None, previous)
        assert start is not None  # `previous` is a snapshot
        data["run"] = run_summary(start, current, current.completed_at)
        events.append(
            _event(
                ref,
                EventType.COMPLETED,
                current.completed_at,
                {"completed_at": completed_ms, "updated_at": updated},
                data,
            )
        )
    if current.message_count > previous.message_count:
        added = current.message_count - previous.message_count
        events.append(
            _event(
                ref,
                EventType.MESSAGES_ADDED,
                at,
                {"total": current.message_count, "updated_at": updated},
                {"added": added, "total": current.message_count},
            )
        )
    if current.archived_at is not None and previous.archived_at is None:
        events.append(
            _event(
                ref,
                EventType.ARCHIVED,
                at,
                {"archived_at": current.archived_at, "updated_at": updated},
                {"archived_at": current.archived_at},
            )
        )
    return events


def diff_states(
    previous: SessionState | None,
    current: SessionState,
    ref: SessionRef,
    now: datetime,
    *,
    run_start: RunStart | None = None,
) -> tuple[Event, ...]:
    """Return the events that explain going from `previous` to `current`.

    `previous` is None for a session never seen before. A 404 (`Gone`) after a
    good snapshot is a deletion; a 404 for a session never seen says nothing.
    A session that comes back after a 404 is discovered again. `run_start` is
    the baseline of the run under way (`lifecycle.run_baseline`); a completion
    carries the summary of that run, or of the time since `previous` without it.
    """
    if isinstance(current, Gone):
        last = previous if isinstance(previous, Snapshot) else None
        if last is None:
            return ()
        cause = {"updated_at": to_unix_ms(last.updated_at)}
        return (_event(ref, EventType.DELETED, now, cause, {}),)
    if not isinstance(previous, Snapshot):
        # updatedAt too: a session forgotten by retention (or deleted) and seen again
        # later is a new discovery, not a resend of the first one under its old id.
        cause = {
            "created_at": to_unix_ms(current.created_at),
            "updated_at": to_unix_ms(current.updated_at),
        }
        return (_event(ref, EventType.DISCOVERED, current.updated_at, cause, {}),)
    return tuple(_snapshot_events(previous, current, ref, run_start))


def state_changed(previous: SessionState | None, current: SessionState) -> bool:
    """Whether `current` must be stored: anything different from what is stored."""
    return previous != current
