"""Values that flow through the watcher: snapshots, events and their parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

JSONValue: TypeAlias = Any  # JSON-serialisable: str, int, float, bool, None, list, dict


class KnownStatus(StrEnum):
    """Statuses the API documents today; any other string is a legal, unknown status."""

    IDLE = "idle"
    PENDING = "pending"
    RUNNING = "running"


class EventType(StrEnum):
    """The v1 event catalog (DESIGN.md) plus the watcher's own health events."""

    DISCOVERED = "session.discovered"
    STATUS_CHANGED = "session.status_changed"
    COMPLETED = "session.completed"
    MESSAGES_ADDED = "session.messages_added"
    ARCHIVED = "session.archived"
    DELETED = "session.deleted"
    API_UNAVAILABLE = "watcher.api_unavailable"
    API_RECOVERED = "watcher.api_recovered"
    # Semantic events: the lifecycle of an agent session (watcher.core.lifecycle).
    STARTED = "session.started"
    FINISHED = "session.finished"
    INTERRUPTED = "session.interrupted"
    WAITING = "session.waiting"
    STUCK = "session.stuck"
    LONG_RUNNING = "session.long_running"
    USAGE_CROSSED = "session.usage_crossed"
    # Notifications held in quiet hours, released as one message per target.
    DIGEST = "watcher.digest"
    # A scheduled report (watcher.core.report): one per report and scheduled time.
    REPORT = "watcher.report"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Cumulative token counters of one session (`tokenUsage`)."""

    input_tokens: float = 0
    output_tokens: float = 0
    cache_creation_tokens: float = 0
    cache_read_tokens: float = 0
    thinking_tokens: float = 0
    factory_credits: float | None = None

    @property
    def total_tokens(self) -> float:
        """Every token counter added up (the API has no total of its own)."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
            + self.thinking_tokens
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one successful `GET /api/v0/sessions/{id}` said about a session."""

    session_id: str
    status: str
    message_count: int
    created_at: datetime
    updated_at: datetime
    title: str = ""
    completed_at: datetime | None = None
    archived_at: str | None = None
    computer_id: str | None = None
    tags: tuple[str, ...] = ()
    token_usage: TokenUsage | None = None
    model: str | None = None
    interaction_mode: str | None = None
    autonomy_level: str | None = None
    assistant_active_ms: float | None = None


@dataclass(frozen=True, slots=True)
class SessionRef:
    """The session as notifications show it: ids, labels and its latest known state."""

    id: str
    title: str = ""
    status: str = ""
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    tags: tuple[str, ...] = ()
    model: str | None = None
    # Facts a live card shows, as the snapshot behind the event had them (None: not known).
    created_at: datetime | None = None
    message_count: int | None = None
    active_ms: float | None = None
    usage: TokenUsage | None = None

    @property
    def credits(self) -> float | None:
        """Factory credits used so far, when the API said."""
        return None if self.usage is None else self.usage.factory_credits

    @property
    def display_name(self) -> str:
        """The most human name known: configured name, then title, then id."""
        return self.name or self.title or self.id


@dataclass(frozen=True, slots=True)
class Event:
    """A transition worth telling someone about; `id` is stable for the same transition."""

    id: str
    type: EventType
    occurred_at: datetime
    session: SessionRef | None
    data: Mapping[str, JSONValue] = field(default_factory=dict)
    # Per-session position, strictly increasing across restarts; assigned by the
    # store when the event is first recorded (0 until then).
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Gone:
    """The API answered 404 for a session: soft-deleted, or never existed."""

    session_id: str
    last: Snapshot | None = None


SessionState = Snapshot | Gone
