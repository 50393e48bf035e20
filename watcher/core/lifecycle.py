"""The lifecycle of an agent session, as a sequence of polls shows it.

A `Track` is what the watcher remembers about a session beyond its last
snapshot: since when it has had its status, when it last made progress, the
last `completedAt` seen, and an `epoch` that moves whenever the status
changes or a new run completes. From one poll to the next, `advance` returns
the new track and the edges it saw (started, finished, interrupted); the
conditions (waiting, stuck, long-running) are read off a track with
`condition_since`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from watcher.core.model import EventType, Gone, JSONValue, KnownStatus, SessionState, Snapshot
from watcher.core.snapshot import from_unix_ms, to_unix_ms

GONE_STATUS = ""  # the track's status once the session answered 404

EDGE_EVENTS = frozenset({EventType.STARTED, EventType.FINISHED, EventType.INTERRUPTED})
CONDITION_EVENTS = frozenset({EventType.WAITING, EventType.STUCK, EventType.LONG_RUNNING})
USAGE_COUNTERS = ("input_tokens", "output_tokens", "total_tokens", "factory_credits")


@dataclass(frozen=True, slots=True)
class Track:
    """What the watcher knows of a session's lifecycle; times are when polls saw things."""

    status: str
    status_since: datetime
    progress_at: datetime
    epoch: int = 0
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """A lifecycle edge one poll saw; `cause` holds the snapshot values behind it."""

    type: EventType
    epoch: int
    occurred_at: datetime
    cause: Mapping[str, JSONValue] = field(default_factory=dict)
    data: Mapping[str, JSONValue] = field(default_factory=dict)


def _progress_marks(snapshot: Snapshot) -> tuple[Any, ...]:
    usage = snapshot.token_usage
    return (snapshot.message_count, snapshot.updated_at, usage)


def start_track(snapshot: Snapshot, now: datetime) -> Track:
    """The track of a session seen for the first time: its baseline, no edges."""
    return Track(
        status=snapshot.status,
        status_since=now,
        progress_at=now,
        completed_at=snapshot.completed_at,
    )


def advance(
    track: Track | None, previous: SessionState | None, current: SessionState, now: datetime
) -> tuple[Track, tuple[Edge, ...]]:
    """The new track after a poll found `current`, and the lifecycle edges it reveals.

    A session seen for the first time is a baseline and reveals nothing. A
    run that started and completed between two polls shows as a newer
    `completedAt` on an idle session: it is a finish all the same.
    """
    last = previous if isinstance(previous, Snapshot) else None
    if last is None and isinstance(previous, Gone):
        last = previous.last
    if isinstance(current, Gone):
        if track is None:
            base = start_track(current.last, now) if current.last else None
            if base is None:
                return Track(GONE_STATUS, now, now), ()
            track = base
        if track.status == GONE_STATUS:
            return track, ()
        return replace(track, status=GONE_STATUS, status_since=now, epoch=track.epoch + 1), ()
    if track is None:
        if last is None:
            return start_track(current, now), ()
        track = start_track(last, now)
    completed = current.completed_at
    new_completion = completed is not None and (
        track.completed_at is None or completed > track.completed_at
    )
    status_changed = current.status != track.status
    progressed = last is None or _progress_marks(last) != _progress_marks(current)
    epoch = track.epoch + 1 if status_changed or new_completion else track.epoch
    new = Track(
        status=current.status,
        status_since=now if status_changed else track.status_since,
        progress_at=now if progressed or status_changed else track.progress_at,
        epoch=epoch,
        completed_at=completed if new_completion else track.completed_at,
    )
    updated = to_unix_ms(current.updated_at)
    edges: list[Edge] = []
    if status_changed and current.status == KnownStatus.RUNNING:
        edges.append(Edge(EventType.STARTED, epoch, now, {"updated_at": updated}))
    if current.status == KnownStatus.IDLE and new_completion:
        assert completed is not None
        duration = (completed - current.created_at).total_seconds()
        edges.append(
            Edge(
                EventType.FINISHED,
                epoch,
                completed,
                {"completed_at": to_unix_ms(completed)},
                {
                    "completed_at": completed.isoformat(),
                    "duration_s": duration,
                    "between_polls": track.status != KnownStatus.RUNNING,
                },
            )
        )
    elif track.status == KnownStatus.RUNNING and current.status == KnownStatus.IDLE:
        edges.append(Edge(EventType.INTERRUPTED, epoch, now, {"updated_at": updated}))
    return new, tuple(edges)


def condition_since(track: Track | None, kind: EventType) -> datetime | None:
    """Since when the condition `kind` has held, or None if it does not hold now."""
    if track is None:
        return None
    if kind is EventType.WAITING:
        return track.status_since if track.status == KnownStatus.PENDING else None
    if track.status != KnownStatus.RUNNING:
        return None
    if kind is EventType.LONG_RUNNING:
        return track.status_since
    if kind is EventType.STUCK:
        return max(track.progress_at, track.status_since)
    return None


def usage_value(snapshot: Snapshot | None, counter: str) -> float | None:
    """The cumulative value of one usage counter, or None when the API did not say."""
    if snapshot is None or snapshot.token_usage is None:
        return None
    usage = snapshot.token_usage
    if counter == "total_tokens":
        return usage.total_tokens
    value = getattr(usage, counter, None)
    return None if value is None else float(value)


def track_to_dict(track: Track) -> dict[str, Any]:
    """Serialise a track for the store (times as Unix ms)."""
    return {
        "status": track.status,
        "status_since": to_unix_ms(track.status_since),
        "progress_at": to_unix_ms(track.progress_at),
        "epoch": track.epoch,
        "completed_at": None if track.completed_at is None else to_unix_ms(track.completed_at),
    }


def track_from_dict(data: Mapping[str, Any]) -> Track:
    """Inverse of `track_to_dict`."""
    completed = data.get("completed_at")
    return Track(
        status=data["status"],
        status_since=from_unix_ms(data["status_since"]),
        progress_at=from_unix_ms(data["progress_at"]),
        epoch=int(data["epoch"]),
        completed_at=None if completed is None else from_unix_ms(completed),
    )
