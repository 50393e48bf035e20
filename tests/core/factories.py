"""Builders for core values, so tests state only what matters to them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.core.model import Event, EventType, SessionRef, Snapshot

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def snap(**changes: Any) -> Snapshot:
    """A running session snapshot at T0, with `changes` applied."""
    base = Snapshot(
        session_id="s1",
        status="running",
        message_count=3,
        created_at=T0 - timedelta(minutes=10),
        updated_at=T0,
        title="Refactor billing",
    )
    return replace(base, **changes)


def later(snapshot: Snapshot, seconds: int = 30, **changes: Any) -> Snapshot:
    """`snapshot` updated `seconds` later with `changes`."""
    return replace(snapshot, updated_at=snapshot.updated_at + timedelta(seconds=seconds), **changes)


def ref(**changes: Any) -> SessionRef:
    """The session reference events about s1 carry."""
    return replace(
        SessionRef(
            id="s1",
            title="Refactor billing",
            status="running",
            name="nightly",
            labels={"team": "platform"},
        ),
        **changes,
    )


def event(kind: EventType = EventType.STATUS_CHANGED, **changes: Any) -> Event:
    """An event about s1 at T0."""
    data = {"from": "running", "to": "idle"} if kind is EventType.STATUS_CHANGED else {}
    base = Event(id="evt_1", type=kind, occurred_at=T0, session=ref(), data=data)
    return replace(base, **changes)
