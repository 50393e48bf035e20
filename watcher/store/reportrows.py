"""What every backend's report reads share: the rows as fetched, and their decoding.

A backend fetches a report's rows (`ReportRows`) in one read transaction,
still as stored, and `decode_report_rows` turns them into a `ReportHistory`
after the read (outside any lock). A stored row that cannot be decoded is left
out (an event) or read as unknown (a state, a track), never raised: one bad
row must not stop a report. Also the outbox lane of a report's rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.core.model import Event, EventType, SessionState
from watcher.core.reporthistory import RecordedEvent, ReportHistory, StoredSession
from watcher.core.text import describe_error
from watcher.store.codec import event_from_json, memory_from_json, state_from_json

log = logging.getLogger("watcher.store")

RUN_STARTED_TO = "running"  # a status change to this starts a run
STATUS_CHANGED = str(EventType.STATUS_CHANGED)

# (body, sequence, recorded_at) of an event in the window, in the order recorded.
EventRow = tuple[str, int | None, float]
# (session_id, state, unwatched_since, stored_at, rule memory, latest event's body).
SessionRow = tuple[str, str, float | None, float, str | None, str | None]


def report_lane(name: str) -> str:
    """The outbox lane of a report's rows: its own, so one report waits behind no session."""
    return f"report:{name}"


def _moment(value: float) -> datetime:
    return datetime.fromtimestamp(value, tz=UTC)


def report_runs_from(rows: Iterable[tuple[str, float]]) -> dict[str, datetime]:
    """Each report's last run from `(name, scheduled_at)` rows as stored.

    A time that cannot be read (a damaged row) is left out with a warning: that
    report then runs as if it never had, rather than every report failing.
    """
    runs: dict[str, datetime] = {}
    for name, at in rows:
        try:
            runs[name] = _moment(at)
        except (TypeError, ValueError, OverflowError, OSError) as error:
            log.warning(
                "the last run of report %s cannot be read (%r: %s); it runs as if it never had",
                name,
                at,
                describe_error(error),
            )
    return runs


@dataclass(frozen=True, slots=True)
class ReportRows:
    """What a report's read transaction fetched, still as stored (decoded after the read).

    Times are Unix seconds, as both backends store them; `baselines` and
    `run_starts` are by session id.
    """

    events: list[EventRow]
    sessions: list[SessionRow]
    baselines: dict[str, tuple[str, int | None]]
    run_starts: dict[str, float]


def starts_a_run(body: str) -> bool:
    """Whether a stored status-change body says the session went to running.

    For a backend that cannot test the JSON safely in SQL: a body that is not
    a JSON object (a damaged row) starts nothing.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return False
    data = document.get("data") if isinstance(document, dict) else None
    return isinstance(data, dict) and data.get("to") == RUN_STARTED_TO


def _event(body: str, sequence: int | None) -> Event | None:
    try:
        return event_from_json(body, sequence)
    except Exception as error:  # any stored text, however broken, is one bad row
        log.warning(
            "a stored event cannot be read (%s); reports leave it out", describe_error(error)
        )
        return None


def _session(
    session_id: str,
    state_text: str,
    unwatched: float | None,
    stored: float,
    memory: str | None,
    last: str | None,
) -> StoredSession:
    state: SessionState | None
    try:
        state = state_from_json(session_id, state_text)
    except Exception:  # an unreadable state is reported as unknown
        state = None
    try:
        track = None if memory is None else memory_from_json(memory).track
    except Exception:  # so is an unreadable track
        track = None
    latest = None if last is None else _event(last, 0)
    ref = None if latest is None else latest.session
    watched = None if unwatched is None else _moment(unwatched)
    return StoredSession(session_id, state, track, ref, watched, _moment(stored))


def decode_report_rows(rows: ReportRows) -> ReportHistory:
    """The history from the fetched rows; unreadable ones left out or read as unknown."""
    events: list[RecordedEvent] = []
    for body, sequence, recorded in rows.events:
        event = _event(body, sequence)
        if event is not None:
            events.append(RecordedEvent(event, _moment(recorded)))
    baselines: dict[str, Event] = {}
    for sid, (body, sequence) in rows.baselines.items():
        found = _event(body, sequence)
        if found is not None:
            baselines[sid] = found
    run_starts = {sid: _moment(at) for sid, at in rows.run_starts.items()}
    sessions = tuple(_session(*row) for row in rows.sessions)
    return ReportHistory(tuple(events), baselines, run_starts, sessions)
