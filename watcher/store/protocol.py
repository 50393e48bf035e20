"""What the rest of the watcher may ask of the state store, as typed protocols.

One protocol per role (sessions, events, rules, outbox, cards, admin,
retention, reports), two
combinations that name what a part uses (`IntakeStore`: sessions, events and
rules; `DeliveryStore`: outbox and cards), and `Store` combining them all,
which a backend implements whole (SQLite, PostgreSQL); tests/store/conformance/
specifies every method here for any backend. `LeaderStore` adds what
replicas sharing a PostgreSQL database need: fencing and claims.
`ReadOnlyStore` is what `status`, `backup` and `report NAME` read, from a
database a daemon may be writing.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from watcher.core.model import Event, SessionState
from watcher.core.outbox import OutboxStatus
from watcher.store.rows import (
    Card,
    DecisionRow,
    Discovered,
    HeldRow,
    OutboxFigures,
    OutboxRow,
    PollMark,
    Pruned,
    Recorded,
    StatusRows,
    StoredStates,
    UnreadableRow,
    UnreadableState,
)

if TYPE_CHECKING:
    from watcher.core.reporthistory import ReportHistory
    from watcher.core.rules import Route
    from watcher.core.rulestate import Evaluation, Mute, MuteKind, SessionMemory


class SessionStore(Protocol):
    """Last known session states and the sessions discovery found."""

    def load_state(self, session_id: str) -> SessionState | None: ...

    def load_states(self, session_ids: Collection[str]) -> StoredStates:
        """The stored states of `session_ids` only, and the rows of them that cannot be read."""
        ...

    def set_aside_states(self, unreadable: Sequence[UnreadableState], now: datetime) -> None:
        """Move unreadable session rows aside with their reasons; those sessions start afresh."""
        ...

    def record(
        self,
        session_id: str,
        state: SessionState,
        events: Sequence[Event],
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
        *,
        evaluation: Evaluation | None = None,
    ) -> int: ...

    def discovered(self) -> Discovered: ...

    def record_discovery(
        self,
        now: datetime,
        first_at: datetime | None,
        added: Sequence[str],
        baselines: Sequence[Recorded],
    ) -> int: ...

    def forget_discovered(self, session_ids: Sequence[str]) -> None: ...


class EventStore(Protocol):
    """Events with their per-session sequence numbers."""

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int: ...

    def recent_events(self, session_id: str, limit: int = 20) -> list[Event]: ...


class RuleStore(Protocol):
    """The rules' memory, held notifications, mutes and decisions."""

    def load_memory(self, session_id: str) -> SessionMemory: ...

    def record_evaluation(self, session_id: str, evaluation: Evaluation, now: datetime) -> int: ...

    def due_sessions(self, now: datetime) -> list[str]: ...

    def next_wake(self) -> datetime | None: ...

    def due_held(self, now: datetime) -> list[HeldRow]: ...

    def held_count(self) -> int: ...

    def release_digests(
        self, digests: Sequence[tuple[Event, Route]], held_ids: Sequence[int], now: datetime
    ) -> int: ...

    def add_mute(self, mute: Mute, now: datetime) -> int: ...

    def remove_mutes(self, kind: MuteKind, value: str) -> int: ...

    def active_mutes(self, now: datetime) -> list[Mute]: ...

    def recent_decisions(self, session_id: str, limit: int = 50) -> list[DecisionRow]: ...


class OutboxStore(Protocol):
    """The delivery outbox: due rows per lane, marks, dead letters."""

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]: ...

    def next_due(self, target: str) -> datetime | None: ...

    def pending_lane(
        self, target: str, session_id: str, limit: int
    ) -> list[OutboxRow | UnreadableRow]: ...

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None: ...

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None: ...

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None: ...

    def list_outbox(
        self, status: OutboxStatus | None = None, limit: int = 1000
    ) -> list[OutboxRow | UnreadableRow]: ...

    def retry_dead(self, now: datetime, ids: Sequence[int] = ()) -> int: ...

    def purge(self, status: OutboxStatus, ids: Sequence[int] = ()) -> int: ...

    def counts(self) -> Mapping[OutboxStatus, int]: ...


class CardStore(Protocol):
    """Live Slack cards: one message per (target, session), with post intents."""

    def card(self, target: str, session_id: str) -> Card | None: ...

    def intend_card(self, card: Card, now: datetime) -> None: ...

    def drop_card_intent(self, target: str, session_id: str, now: datetime) -> None: ...

    def record_card(
        self, target: str, session_id: str, ts: str, delivered: Sequence[int], now: datetime
    ) -> None: ...


class AdminStore(Protocol):
    """Housekeeping, figures, health, and where the store is."""

    @property
    def location(self) -> str:
        """Where the data lives, for log lines (a path, or `:memory:`)."""
        ...

    def for_delivery(self) -> Store:
        """The store the outbox worker uses: its own connection where the backend has one."""
        ...

    def record_housekeeping(
        self,
        polls: Sequence[PollMark],
        meta: Mapping[str, str],
        watched: Collection[str] | None = None,
    ) -> None:
        """Poll marks and meta in one transaction; with `watched`, other sessions' marks go."""
        ...

    def outbox_figures(self, targets: Sequence[str]) -> OutboxFigures: ...

    def integrity_ok(self) -> bool: ...

    def close(self) -> None: ...


class RetentionStore(Protocol):
    """Retention: the watch set's marks, pruning batches, and what pruning leaves behind.

    Each pruning call is one short transaction of at most about `limit` rows;
    `Pruned.more` says another is due now. Running totals per table survive
    restarts.
    """

    def note_watched(self, session_ids: Collection[str], now: datetime) -> None:
        """The watch set is `session_ids`: others are unwatched from `now` on, these watched."""
        ...

    def unwatched_since(self, session_id: str) -> datetime | None:
        """When `session_id` left the watch set (None: watched, or not stored)."""
        ...

    def prune_finished(self, status: OutboxStatus, before: datetime, limit: int) -> Pruned:
        """Delete delivered or dead rows finished before `before`, and events only they used."""
        ...

    def prune_events(self, before: datetime, limit: int) -> Pruned:
        """Delete events recorded before `before` that nothing refers to."""
        ...

    def forget_sessions(
        self, before: datetime, watched: Container[str], now: datetime, limit: int
    ) -> Pruned:
        """Forget sessions unwatched since before `before` (never one in `watched`)."""
        ...

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table."""
        ...

    def database_bytes(self) -> int:
        """The database's size in bytes."""
        ...


class ReportContentStore(Protocol):
    """What a scheduled report's content is computed from (`watcher.core.report`)."""

    def report_history(self, start: datetime, end: datetime) -> ReportHistory:
        """The events recorded in `start < recorded_at <= end`, each of their sessions'
        latest event recorded at or before `start` (the baseline of its counters), and
        every stored session's current state, lifecycle track and watch mark.
        """
        ...


class ReportRunStore(Protocol):
    """The last run of each scheduled report, recorded with its outbox rows exactly once."""

    def report_runs(self) -> dict[str, datetime]:
        """The scheduled time of each report's last recorded run, by report name."""
        ...

    def record_report(
        self,
        name: str,
        scheduled_at: datetime,
        event: Event,
        routes: Sequence[tuple[Event, Route]],
        now: datetime,
    ) -> int:
        """Store the run of `name` for `scheduled_at`, its event and outbox rows (lane
        `report:{name}`) in one transaction; 0 and nothing stored when the stored last run
        is already at or after `scheduled_at` (exactly once). The new outbox rows.
        """
        ...


class ReportStore(ReportContentStore, ReportRunStore, Protocol):
    """Scheduled reports: their content and their runs."""


class ReportReader(ReportContentStore, Protocol):
    """What `report NAME` reads, from a database a daemon may be writing."""

    def report_runs(self) -> dict[str, datetime]:
        """The scheduled time of each report's last recorded run, by report name."""
        ...

    def close(self) -> None: ...


class IntakeStore(SessionStore, EventStore, RuleStore, Protocol):
    """What intake reads and records: a poll's or a timer tick's states, events and rules."""


class DeliveryStore(OutboxStore, CardStore, Protocol):
    """What the outbox worker reads and marks: due rows, lanes and cards."""


class Store(IntakeStore, DeliveryStore, AdminStore, RetentionStore, ReportStore, Protocol):
    """The whole state store: what the daemon and the commands use."""


class LeaderStore(Store, Protocol):
    """A store shared by replicas, written only by the lease's holder (PostgreSQL only).

    Opened fenced, every write transaction first checks that the store's epoch
    still holds the leader lease and raises `FencedError` otherwise; `due`
    claims the rows it hands out under that epoch.
    """

    @property
    def fenced_writes(self) -> int:
        """How many writes the fence refused so far."""
        ...

    def set_epoch(self, epoch: int | None) -> None:
        """Write under `epoch` from now on (None: refuse every write)."""
        ...

    def requeue_claimed(self, epoch: int) -> int:
        """Return pending rows claimed under an epoch before `epoch`; how many (a takeover's
        possible duplicates)."""
        ...


class ReadOnlyStore(ReportReader, Protocol):
    """A database opened only to read it while a daemon may write: `status`, `backup` and
    `report NAME` (a report's history and runs, read as the daemon's store reads them).
    """

    def read_status(self, configured: Sequence[str] = ()) -> StatusRows:
        """Everything `status` shows, read in one read transaction.

        Per-session facts are read for the watched sessions only: the daemon's
        watched set (meta `watched`), or `configured` before a daemon wrote one.
        """
        ...

    def copy_to(self, destination: Path) -> int:
        """Copy the whole database, consistently, to the new file `destination`; its pages.

        The copy is checked whole before this returns; StoreError otherwise.
        """
        ...

    def close(self) -> None: ...
