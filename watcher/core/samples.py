"""Sample events of every type, with the data each type really carries.

Templates are rendered against them when the config is loaded (a template that
fails on one is a config error) and by `factory-watcher render` when no event
file is given. The data keys mirror what `diff`, `lifecycle`, `rulestate` and
`health` put into real events.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from watcher.core.diff import event_id
from watcher.core.lifecycle import RunStart, Track, run_summary
from watcher.core.model import Event, EventType, JSONValue, SessionRef, Snapshot, TokenUsage
from watcher.core.report import (
    RecordedEvent,
    ReportHistory,
    StoredSession,
    build_report,
)
from watcher.core.settings import ReportSpec

SAMPLE_NOW = datetime(2026, 1, 15, 14, 30, tzinfo=UTC)
SAMPLE_SEQUENCE = 7
SAMPLE_ANSWER = (
    "Refactored the billing module: extracted `InvoiceBuilder`, added 14 tests, "
    "all green. Next step: remove the legacy <v1> endpoints & their callers."
)

_STATUS = {
    EventType.DISCOVERED: "running",
    EventType.STATUS_CHANGED: "idle",
    EventType.COMPLETED: "idle",
    EventType.MESSAGES_ADDED: "running",
    EventType.ARCHIVED: "idle",
    EventType.DELETED: "idle",
    EventType.STARTED: "running",
    EventType.FINISHED: "idle",
    EventType.INTERRUPTED: "idle",
    EventType.WAITING: "pending",
    EventType.STUCK: "running",
    EventType.LONG_RUNNING: "running",
    EventType.USAGE_CROSSED: "running",
}
CONDITIONS = frozenset({EventType.WAITING, EventType.STUCK, EventType.LONG_RUNNING})


SAMPLE_USAGE = TokenUsage(
    input_tokens=412_000,
    output_tokens=58_000,
    cache_creation_tokens=21_000,
    cache_read_tokens=903_000,
    thinking_tokens=0,
    factory_credits=104.5,
)


def sample_session(status: str = "idle") -> SessionRef:
    """A realistic session as notifications show it."""
    return SessionRef(
        id="sample-session-8f1c2a",
        title="Refactor the billing module",
        status=status,
        name="nightly-refactor",
        labels={"team": "platform"},
        url="https://app.factory.ai/sessions/sample-session-8f1c2a",
        tags=("backend",),
        model="claude-sonnet-4-5",
        created_at=SAMPLE_NOW - timedelta(hours=2),
        message_count=42,
        active_ms=1_020_000.0,
        usage=SAMPLE_USAGE,
    )


def sample_run(now: datetime) -> dict[str, JSONValue]:
    """The `run` summary finished, interrupted and completed events carry."""
    start = RunStart(
        started_at=now - timedelta(seconds=1325),
        message_count=30,
        active_ms=120_000.0,
        usage=TokenUsage(200_000, 30_000, 10_000, 400_000, 0, 60.0),
    )
    current = Snapshot(
        session_id="sample-session-8f1c2a",
        status="idle",
        message_count=42,
        created_at=now - timedelta(hours=2),
        updated_at=now,
        token_usage=SAMPLE_USAGE,
        assistant_active_ms=1_020_000.0,
    )
    return run_summary(start, current, now)


def _iso(value: datetime) -> str:
    return value.isoformat()


def sample_report_documents(now: datetime) -> list[dict[str, JSONValue]]:
    """Report documents as `build_report` makes them: a day with a finished run and a
    session waiting, grouped by team; and a day when nothing happened.
    """
    session = sample_session("idle")
    began = now - timedelta(hours=3)
    started = Event(
        "evt-sample-report-1",
        EventType.STATUS_CHANGED,
        began,
        replace(session, status="running"),
        {"from": "idle", "to": "running"},
    )
    finished = Event(
        "evt-sample-report-2",
        EventType.COMPLETED,
        now - timedelta(hours=2),
        session,
        {
            "completed_at": _iso(now - timedelta(hours=2)),
            "run": sample_run(now - timedelta(hours=2)),
        },
    )
    waiting = Snapshot(
        session_id="sample-session-3b7d9e",
        status="pending",
        message_count=12,
        created_at=now - timedelta(hours=5),
        updated_at=now - timedelta(minutes=40),
        title="Upgrade the payment SDK",
    )
    history = ReportHistory(
        events=(
            RecordedEvent(started, began),
            RecordedEvent(finished, finished.occurred_at),
        ),
        sessions=(
            StoredSession(
                waiting.session_id,
                waiting,
                Track("pending", waiting.updated_at, waiting.updated_at),
                SessionRef(waiting.session_id, waiting.title, "pending", labels={"team": "web"}),
            ),
        ),
    )
    spec = ReportSpec("daily", "0 9 * * mon-fri", "Europe/Berlin", group_by="team")
    url = "https://app.factory.ai/sessions/{id}"
    start = now - timedelta(days=1)
    full = build_report(spec, history, start, now, now, url)
    empty = build_report(spec, ReportHistory(), start, now, now, url)
    return [dict(full.document), dict(empty.document)]


def _data(kind: EventType, now: datetime) -> list[dict[str, JSONValue]]:
    """The data variants an event of `kind` can carry (conditions: firing, reminder, resolved)."""
    since = now - timedelta(minutes=20)
    if kind is EventType.STATUS_CHANGED:
        return [{"from": "running", "to": "idle"}]
    if kind in (EventType.COMPLETED, EventType.FINISHED):
        data: dict[str, JSONValue] = {"completed_at": _iso(now), "duration_s": 1325.0}
        if kind is EventType.FINISHED:
            data["between_polls"] = False
        return [{**data, "run": sample_run(now)}]
    if kind is EventType.INTERRUPTED:
        return [{"run": sample_run(now)}]
    if kind is EventType.MESSAGES_ADDED:
        return [{"added": 3, "total": 42}]
    if kind is EventType.ARCHIVED:
        return [{"archived_at": "2026-01-15T14:30:00.000Z"}]
    if kind in CONDITIONS:
        return [
            {"since": _iso(since), "for_s": 1200.0},
            {"since": _iso(since), "for_s": 2400.0, "reminder": 1},
            {"resolved": True, "since": _iso(since), "lasted_s": 1260.0},
        ]
    if kind is EventType.USAGE_CROSSED:
        return [{"counter": "factory_credits", "threshold": 100.0, "value": 104.5}]
    if kind is EventType.API_UNAVAILABLE:
        return [{"since": _iso(since), "reason": "HTTP 503 Service Unavailable", "auth": False}]
    if kind is EventType.API_RECOVERED:
        return [{"down_since": _iso(since), "down_for_s": 1200.0}]
    if kind is EventType.DIGEST:
        item = {
            "id": "evt-sample-held",
            "type": str(EventType.FINISHED),
            "rule": "finished",
            "occurred_at": _iso(since).replace("+00:00", "Z"),
            "session": {
                "id": "sample-session-8f1c2a",
                "name": "nightly-refactor",
                "title": "Refactor the billing module",
                "status": "idle",
                "url": "https://app.factory.ai/sessions/sample-session-8f1c2a",
            },
            "data": {"completed_at": _iso(since), "duration_s": 1325.0, "between_polls": False},
        }
        return [{"window": "night", "count": 1, "items": [item]}]
    if kind is EventType.REPORT:
        return sample_report_documents(now)
    return [{}]


def sample_events(kind: EventType, *, now: datetime = SAMPLE_NOW) -> tuple[Event, ...]:
    """Every data variant of an event of `kind`, as the watcher would record it."""
    session = None
    if kind.startswith("session."):
        session = sample_session(_STATUS.get(kind, "idle"))
    return tuple(
        Event(
            id=f"evt-sample-{kind.replace('.', '-')}-{n}",
            type=kind,
            occurred_at=now,
            session=session,
            data=data,
            sequence=SAMPLE_SEQUENCE,
        )
        for n, data in enumerate(_data(kind, now))
    )


def sample_event(kind: EventType, *, now: datetime = SAMPLE_NOW) -> Event:
    """The first (most usual) variant of an event of `kind`."""
    return sample_events(kind, now=now)[0]


def with_answer(event: Event, answer: str = SAMPLE_ANSWER) -> Event:
    """`event` as `include_last_answer` delivers it: with `data["last_answer"]`."""
    return replace(event, data={**event.data, "last_answer": answer})


def build_test_notification(now: datetime, sender: str, title: str) -> Event:
    """A synthetic notification that says plainly it is a test (`test-notify`, `doctor --send`).

    Never stored, so numbered by the clock: each later test outranks the last at
    a receiver that drops stale sequences.
    """
    return Event(
        id=event_id(f"factory-watcher-{sender}", EventType.STATUS_CHANGED, {"at": now.isoformat()}),
        type=EventType.STATUS_CHANGED,
        occurred_at=now,
        session=SessionRef(id="test-session", title=title, status="idle", name=sender),
        data={"from": "running", "to": "idle", "test": True},
        sequence=int(now.timestamp() * 1000),
    )
