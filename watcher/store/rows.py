"""The values the store hands out and takes in: outbox rows, cards, marks and figures.

Plain frozen dataclasses, no database code: every backend returns these. The
rule engine's types (`Held`, `Outcome`, `Route`) are named for the type checker
only, so importing the rows does not load the rule engine (`outbox list`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event, SessionState
from watcher.core.outbox import OutboxStatus
from watcher.store.errors import StoreError

if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import Held, Outcome


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One notification: an event for one target, with its delivery history."""

    id: int
    event: Event
    rule: str
    target: str
    status: OutboxStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    finished_at: datetime | None = None

    @property
    def event_type(self) -> str:
        """The event's type, as `UnreadableRow` has it too."""
        return str(self.event.type)

    @property
    def session_id(self) -> str | None:
        """The event's session, as `UnreadableRow` has it too."""
        return self.event.session.id if self.event.session else None


@dataclass(frozen=True, slots=True)
class UnreadableRow:
    """An outbox row whose stored event cannot be decoded; delivery dead-letters it.

    It carries what the outbox and events tables say in their own columns, so
    it can still be listed, retried or purged.
    """

    id: int
    event_id: str
    event_type: str
    session_id: str | None
    rule: str
    target: str
    status: OutboxStatus
    attempts: int
    created_at: datetime
    last_error: str | None
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Card:
    """The live Slack card of one session for one target.

    `ts` is None while no card is known: `posting_since` then says a post with
    `marker` in its metadata may have reached Slack since that time (we
    crashed before learning its `ts`), so it is looked up before posting again.
    `replaced_ts` is the card this one replaces, and why.
    """

    target: str
    session_id: str
    channel: str
    ts: str | None
    marker: str
    posting_since: datetime | None = None
    replaced_ts: str | None = None
    replaced_reason: str | None = None
    replaced_url: str | None = None  # the replaced card's permalink, when Slack gave one


@dataclass(frozen=True, slots=True)
class PollMark:
    """The last poll of a session as `status` shows it (written in batches, not per poll)."""

    session_id: str
    polled_at: datetime
    outcome: str
    next_poll_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """Outbox depth for the metrics: pending and dead rows by target, oldest pending row."""

    pending: Mapping[str, int]
    dead: Mapping[str, int]
    oldest_pending_at: datetime | None


@dataclass(frozen=True, slots=True)
class HeldRow:
    """A stored notification held for a quiet-hours digest."""

    id: int
    held: Held


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A stored rule decision, for `explain`."""

    at: datetime
    rule: str
    event_id: str
    event_type: str
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class Discovered:
    """Sessions found through the list: when discovery first ran, and which are watched."""

    first_at: datetime | None
    session_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Recorded:
    """One session's new state with its events and routes, for a batch commit."""

    session_id: str
    state: SessionState
    events: Sequence[Event] = ()
    routes: Sequence[tuple[Event, Route]] = ()


# --- what `status` reads, in one read transaction ---------------------------------------


@dataclass(frozen=True, slots=True)
class TargetBacklog:
    """The outbox of one target as `status` shows it: pending (some retrying) and dead."""

    target: str
    pending: int
    retrying: int
    next_attempt: datetime | None  # of the retrying rows
    dead: int
    last_error: str | None  # of the newest dead letter


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A dead letter as `status` lists it (from the outbox and events tables' own columns)."""

    id: int
    target: str
    rule: str
    event_type: str
    session_id: str | None
    attempts: int
    created_at: datetime
    failed_at: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pruning batch deleted: rows per table, and whether more is due now.

    `more` is true when the batch was full: the caller runs another after a pause.
    """

    rows: Mapping[str, int]
    more: bool = False

    @property
    def total(self) -> int:
        """Rows deleted over every table."""
        return sum(self.rows.values())


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The leader lease of replicas sharing a PostgreSQL state, as `status` reads it.

    `read_at` is the database's clock when it was read: the lease's times are
    the database's, so "expires in" is `expires_at - read_at`, never a local clock.
    """

    holder: str  # host:pid:random
    epoch: int
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    read_at: datetime

    @property
    def expires_in(self) -> float:
        """Seconds until the lease lapses by the database's clock (negative: lapsed)."""
        return (self.expires_at - self.read_at).total_seconds()


@dataclass(frozen=True, slots=True)
class StatusRows:
    """Everything `status` reads from the state database, read at one moment.

    `meta` is the daemon's own values as written (heartbeat, API state, watched
    set); `states` is each watched session's (last known status, gone?);
    `since` the time of its last status-changing event; `notified` its last
    delivered notification (the maps hold watched sessions only);
    `report_runs` the scheduled time each report last ran for.
    """

    meta: Mapping[str, str]
    states: Mapping[str, tuple[str | None, bool]]
    since: Mapping[str, datetime]
    polls: Mapping[str, PollMark]
    notified: Mapping[str, datetime]
    targets: tuple[TargetBacklog, ...] = ()
    dead_letters: tuple[DeadLetterRow, ...] = ()
    database_bytes: int | None = None  # the file's pages (None: not read)
    rows_pruned: Mapping[str, int] = field(default_factory=dict)  # by table, ever
    lease: LeaseRow | None = None  # PostgreSQL only: the leader lease (None: never taken)
    report_runs: Mapping[str, datetime] = field(default_factory=dict)  # by report name


def watched_in(meta: Mapping[str, str]) -> list[tuple[str, str | None]] | None:
    """The daemon's watched set as it wrote it in `meta`: (id, name) pairs; None before it did.

    StoreError if the value cannot be read (a damaged row is a clear error, not a traceback).
    """
    if "watched" not in meta:
        return None
    try:
        return [(w["id"], w.get("name")) for w in json.loads(meta["watched"])]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StoreError(f"the watched set in the state database cannot be read: {error}") from None


@dataclass(frozen=True, slots=True)
class UnreadableState:
    """A stored session state that cannot be decoded: set aside, the session re-baselined."""

    session_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoredStates:
    """The stored states of the sessions asked for, and those whose row cannot be read."""

    states: Mapping[str, SessionState]
    unreadable: tuple[UnreadableState, ...] = ()
