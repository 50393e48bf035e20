"""A simulated history for report tests: polls of sessions through the real intake path.

Each `poll` is what the watcher would commit for a `GET /sessions/{id}` at a
minute of the simulated day: the diff's events, the lifecycle track, the new
state, in the store the report then reads. Times are minutes after `W0`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.core.model import Snapshot, TokenUsage
from watcher.core.poll import Fetched, NotFound
from watcher.core.report import Report, build_report
from watcher.core.settings import ReportSpec, WatchedSession
from watcher.intake.poll import apply_poll
from watcher.store import SqliteStore, Store

W0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
URL = "https://app.example/sessions/{id}"
# The window the tables use: (1h, 25h] after W0.
START = W0 + timedelta(hours=1)
END = START + timedelta(hours=24)


def at(minutes: float) -> datetime:
    """`minutes` after W0."""
    return W0 + timedelta(minutes=minutes)


def usage(credits: float, tokens: float = 0) -> TokenUsage:
    """Cumulative usage with `credits` and `tokens` input tokens."""
    return TokenUsage(input_tokens=tokens, output_tokens=tokens / 2, factory_credits=credits)


class History:
    """Sessions polled in order; the store holds what the watcher would have stored."""

    def __init__(self, store: Store | None = None, base: datetime = W0) -> None:
        self.store: Store = store or SqliteStore(":memory:")
        self.base = base  # minute 0
        self.snaps: dict[str, Snapshot] = {}
        self.labels: dict[str, dict[str, str]] = {}

    def at(self, minutes: float) -> datetime:
        """`minutes` after this history's minute 0."""
        return self.base + timedelta(minutes=minutes)

    def watched(self, sid: str) -> WatchedSession:
        """The config entry of `sid`."""
        return WatchedSession(sid, name=f"task-{sid}", labels=self.labels.get(sid, {}))

    def poll(self, minute: float, sid: str, status: str | None = None, **changes: Any) -> None:
        """A poll of `sid` at `minute` finding its last snapshot with `changes`.

        `created` (minutes) sets when a new session was created (default: the poll);
        `completed` (minutes) its completedAt; `credits`/`tokens` its usage.
        """
        now = self.at(minute)
        created = changes.pop("created", None)
        if "completed" in changes:
            changes["completed_at"] = self.at(changes.pop("completed"))
        if "credits" in changes:
            changes["token_usage"] = usage(changes.pop("credits"), changes.pop("tokens", 0))
        if status is not None:
            changes["status"] = status
        previous = self.snaps.get(sid) or Snapshot(
            session_id=sid,
            status="idle",
            message_count=0,
            created_at=now if created is None else self.at(created),
            updated_at=now,
            title=f"Task {sid}",
        )
        snapshot = replace(previous, updated_at=now, **changes)
        self.snaps[sid] = snapshot
        apply_poll(self.store, (), URL, self.watched(sid), Fetched(snapshot), now)

    def gone(self, minute: float, sid: str) -> None:
        """A poll of `sid` at `minute` answered 404."""
        apply_poll(self.store, (), URL, self.watched(sid), NotFound(), self.at(minute))

    def watch(self, minute: float, *sids: str) -> None:
        """From `minute` on, only `sids` are watched."""
        self.store.note_watched(sids, self.at(minute))

    def report(
        self,
        spec: ReportSpec | None = None,
        start: datetime = START,
        end: datetime = END,
        now: datetime | None = None,
    ) -> Report:
        """The report of `spec` (default: everything) for the window, made at `now`."""
        spec = spec or ReportSpec("daily", "0 9 * * *")
        history = self.store.report_history(start, end)
        return build_report(spec, history, start, end, now or end, URL)
