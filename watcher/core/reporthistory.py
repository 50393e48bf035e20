"""What a report reads from the store: a window's events, their baselines, sessions now.

Plain values (`watcher.core.report` computes the content from them), kept apart
so the store can hand them out without loading the lifecycle or the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event, SessionRef, SessionState

if TYPE_CHECKING:
    from watcher.core.lifecycle import Track


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A stored event with the time the watcher recorded it (its poll's commit)."""

    event: Event
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as the store holds it now.

    `state` is None when its stored row cannot be read; `ref` is the session as
    its latest stored event described it (name, labels, link), None without one.
    """

    session_id: str
    state: SessionState | None
    track: Track | None = None
    ref: SessionRef | None = None
    unwatched_since: datetime | None = None
    stored_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReportHistory:
    """What a report's window needs from the store (`ReportContentStore.report_history`).

    `events`: those recorded in `start < recorded_at <= end`, in the order
    recorded. For each session with events in the window or its state stored
    in it: `baselines`, its latest event recorded at or before `start` (its
    counters then), and `run_starts`, when its latest run that began at or
    before `start` began (a run spanning the window's start).
    `sessions`: every stored session's current state.
    """

    events: tuple[RecordedEvent, ...] = ()
    baselines: Mapping[str, Event] = field(default_factory=dict)
    run_starts: Mapping[str, datetime] = field(default_factory=dict)
    sessions: tuple[StoredSession, ...] = ()
