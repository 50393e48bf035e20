"""Scheduled reports' content: what the watched sessions did in a window, as one document.

`build_report` is a pure function of a `ReportSpec`, the stored history the
store hands over (`ReportHistory`), the window and `now`; `report_event` makes
the report the one event the outbox delivers. The report's JSON document
(`Report.document`) is what a webhook's `data` carries and `report NAME
--json` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from watcher.core.lifecycle import Track
from watcher.core.model import Event, SessionRef, SessionState


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


@dataclass(frozen=True, slots=True)
class ReportHistory:
    """What a report's window needs from the store (`ReportContentStore.report_history`).

    `events`: those recorded in `start < recorded_at <= end`, in the order
    recorded. `baselines`: for each session with events in the window, its
    latest event recorded at or before `start` (its counters then).
    `sessions`: every stored session's current state.
    """

    events: tuple[RecordedEvent, ...] = ()
    baselines: Mapping[str, Event] = field(default_factory=dict)
    sessions: tuple[StoredSession, ...] = ()
