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
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from watcher.core.model import (
    EventType,
    Gone,
    JSONValue,
    KnownStatus,
    SessionState,
    Snapshot,
    TokenUsage,
)
from watcher.core.snapshot import from_unix_ms, to_unix_ms

GONE_STATUS = ""  # the track's status once the session answered 404

EDGE_EVENTS = frozenset({EventType.STARTED, EventType.FINISHED, EventType.INTERRUPTED})
CONDITION_EVENTS = frozenset({EventType.WAITING, EventType.STUCK, EventType.LONG_RUNNING})
USAGE_COUNTERS = ("input_tokens", "output_tokens", "total_tokens", "factory_credits")


@dataclass(frozen=True, slots=True)
class RunStart:
    """A session's counters when a run began: the baseline of the run's summary.

    `started_at` is None when the start is not known (a run that happened
    entirely between two polls, or one already under way when first seen);
    `partial` says the counters were taken mid-run, so the summary undercounts.
    """

    started_at: datetime | None
    message_count: int
    active_ms: float | None = None
    usage: TokenUsage | None = None
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Track:
    """What the watcher knows of a session's lifecycle; times are when polls saw things."""

    status: str
    status_since: datetime
    progress_at: datetime
    epoch: int = 0
    completed_at: datetime | None = None
    run: RunStart | None = None  # the current run's baseline, while the session is busy


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


def _busy(status: str) -> bool:
    """Whether a status belongs to a run: anything but idle (unknown statuses included)."""
    return status not in (KnownStatus.IDLE, GONE_STATUS)


def baseline_of(
    snapshot: Snapshot, started_at: datetime | None, *, partial: bool = False
) -> RunStart:
    """The counters of `snapshot` as the baseline of a run that began at `started_at`."""
    return RunStart(
        started_at=started_at,
        message_count=snapshot.message_count,
        active_ms=snapshot.assistant_active_ms,
        usage=snapshot.token_usage,
        partial=partial,
    )


def _first_seen_run(snapshot: Snapshot) -> RunStart | None:
    """The run of a session first seen busy: from its creation if it never completed a
    run (every counter started at zero), else from this snapshot, marked partial.
    """
    if not _busy(snapshot.status):
        return None
    if snapshot.completed_at is None:
        return _from_creation(snapshot)
    return baseline_of(snapshot, None, partial=True)


def _from_creation(snapshot: Snapshot) -> RunStart:
    """The baseline of a session's first run: its creation, every counter at zero."""
    return RunStart(snapshot.created_at, 0, 0.0, TokenUsage(factory_credits=0.0))


def start_track(snapshot: Snapshot, now: datetime) -> Track:
    """The track of a session seen for the first time: its baseline, no edges."""
    return Track(
        status=snapshot.status,
        status_since=now,
        progress_at=now,
        completed_at=snapshot.completed_at,
        run=_first_seen_run(snapshot),
    )


def run_baseline(track: Track | None, previous: SessionState | None) -> RunStart | None:
    """The baseline of the run that ends now: the one the track kept since the run began,
    else (a run that happened entirely between polls) the previous snapshot, or the
    session's creation if it had never completed a run.
    """
    if track is not None and track.run is not None:
        return track.run
    last = previous.last if isinstance(previous, Gone) else previous
    if last is None:
        return None
    if last.completed_at is None:
        return _from_creation(last)
    # A busy track without a run was stored before runs were followed: mid-run counters.
    return baseline_of(last, None, partial=track is not None and _busy(track.status))


def json_number(value: float) -> int | float:
    """A JSON-simple number: whole values as int, others rounded."""
    return int(value) if float(value).is_integer() else round(value, 4)


def _delta(after: float | None, before: float | None) -> int | float | None:
    if after is None or before is None:
        return None
    return json_number(max(0.0, after - before))


def run_summary(start: RunStart, current: Snapshot, ended_at: datetime) -> dict[str, JSONValue]:
    """What one run took, as JSON-simple values: its duration, active time and share,
    the tokens and credits it used and the messages it added (differences from `start`).
    """
    duration = None
    if start.started_at is not None:
        duration = max(0.0, (ended_at - start.started_at).total_seconds())
    active_ms = _delta(current.assistant_active_ms, start.active_ms)
    active_s = None if active_ms is None else active_ms / 1000
    share = None
    if active_s is not None and duration:
        # Poll times bound the start, so the estimate may fall short of the active time.
        share = round(min(1.0, active_s / duration), 4)
    before, after = start.usage, current.token_usage
    tokens: dict[str, JSONValue] | None = None
    credits = None
    if after is not None:
        base = before or TokenUsage()
        tokens = {
            "input": _delta(after.input_tokens, base.input_tokens),
            "output": _delta(after.output_tokens, base.output_tokens),
            "cache": _delta(
                after.cache_creation_tokens + after.cache_read_tokens,
                base.cache_creation_tokens + base.cache_read_tokens,
            ),
        }
        credits = _delta(after.factory_credits, None if before is None else before.factory_credits)
    return {
        "started_at": None if start.started_at is None else start.started_at.isoformat(),
        "ended_at": ended_at.isoformat(),
        "duration_s": None if duration is None else json_number(round(duration, 3)),
        "active_s": None if active_s is None else json_number(round(active_s, 3)),
        "active_share": share,
        "tokens": tokens,
        "credits": credits,
        "messages_added": max(0, current.message_count - start.message_count),
        "partial": start.partial,
    }


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
        gone = replace(track, status=GONE_STATUS, status_since=now, epoch=track.epoch + 1, run=None)
        return gone, ()
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
        run=_next_run(track, last, current, now),
    )
    updated = to_unix_ms(current.updated_at)
    edges: list[Edge] = []
    if status_changed and current.status == KnownStatus.RUNNING:
        edges.append(Edge(EventType.STARTED, epoch, now, {"updated_at": updated}))
    end = _end_edge(track, last, current, epoch, now, new_completion=new_completion)
    if end is not None:
        edges.append(end)
    return new, tuple(edges)


def _end_edge(
    track: Track,
    last: Snapshot | None,
    current: Snapshot,
    epoch: int,
    now: datetime,
    *,
    new_completion: bool,
) -> Edge | None:
    """The edge that ends a run, finished or interrupted, with the run's summary."""
    completed = current.completed_at
    start = run_baseline(track, last)
    if current.status == KnownStatus.IDLE and new_completion:
        assert completed is not None
        duration = (completed - current.created_at).total_seconds()
        data: dict[str, JSONValue] = {
            "completed_at": completed.isoformat(),
            "duration_s": duration,
            "between_polls": track.status != KnownStatus.RUNNING,
        }
        if start is not None:
            data["run"] = run_summary(start, current, completed)
        cause = {"completed_at": to_unix_ms(completed)}
        return Edge(EventType.FINISHED, epoch, completed, cause, data)
    if track.status == KnownStatus.RUNNING and current.status == KnownStatus.IDLE:
        data = {}
        if start is not None:
            ended = current.updated_at
            if start.started_at is not None and ended < start.started_at:
                ended = now  # the API's clock and ours disagree: the poll's time is the bound
            data["run"] = run_summary(start, current, ended)
        cause = {"updated_at": to_unix_ms(current.updated_at)}
        return Edge(EventType.INTERRUPTED, epoch, now, cause, data)
    return None


def _next_run(
    track: Track, last: Snapshot | None, current: Snapshot, now: datetime
) -> RunStart | None:
    """The run baseline after this poll: kept while busy, taken when a run begins, dropped
    when the session goes idle.
    """
    if not _busy(current.status):
        return None
    if _busy(track.status):
        return track.run or _first_seen_run(current)
    # The run began since the last poll, after the idle snapshot `last`; the current
    # snapshot's updatedAt is no earlier than the start, and bounds it closer than `now`.
    started = min(now, current.updated_at)
    if last is None:
        return baseline_of(current, started, partial=True)
    return baseline_of(last, max(started, last.updated_at))


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
        "run": None if track.run is None else _run_to_dict(track.run),
    }


def _run_to_dict(run: RunStart) -> dict[str, Any]:
    return {
        "started_at": None if run.started_at is None else to_unix_ms(run.started_at),
        "message_count": run.message_count,
        "active_ms": run.active_ms,
        "usage": None if run.usage is None else asdict(run.usage),
        "partial": run.partial,
    }


def _run_from_dict(data: Mapping[str, Any]) -> RunStart:
    started = data.get("started_at")
    usage = data.get("usage")
    return RunStart(
        started_at=None if started is None else from_unix_ms(started),
        message_count=int(data["message_count"]),
        active_ms=data.get("active_ms"),
        usage=None if usage is None else TokenUsage(**usage),
        partial=bool(data.get("partial", False)),
    )


def track_from_dict(data: Mapping[str, Any]) -> Track:
    """Inverse of `track_to_dict`."""
    completed = data.get("completed_at")
    return Track(
        status=data["status"],
        status_since=from_unix_ms(data["status_since"]),
        progress_at=from_unix_ms(data["progress_at"]),
        epoch=int(data["epoch"]),
        completed_at=None if completed is None else from_unix_ms(completed),
        # Tracks stored before runs were followed have none: the next run starts one.
        run=None if data.get("run") is None else _run_from_dict(data["run"]),
    )
