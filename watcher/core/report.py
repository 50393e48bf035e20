"""Scheduled reports' content: what the watched sessions did in a window, as one document.

`build_report` is a pure function of a `ReportSpec`, the stored history the
store hands over (`ReportHistory`), the window and `now`; `report_event` makes
the report the one event the outbox delivers. The report's JSON document
(`Report.document`) is what a webhook's `data` carries and `report NAME
--json` prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.core.lifecycle import condition_since, json_number
from watcher.core.model import (
    Event,
    EventType,
    Gone,
    JSONValue,
    KnownStatus,
    SessionRef,
    Snapshot,
    TokenUsage,
)
from watcher.core.reporthistory import RecordedEvent, ReportHistory, StoredSession
from watcher.core.rules import judge_session
from watcher.core.settings import ReportSpec, Rule

__all__ = [
    "HAPPENED",
    "KINDS",
    "NOW",
    "REPORT_RULE_PREFIX",
    "RecordedEvent",
    "Report",
    "ReportHistory",
    "StoredSession",
    "build_report",
    "report_event",
    "report_rule",
]

# The `rule` of a report's outbox rows, and the prefix of its lane (`report:NAME`).
REPORT_RULE_PREFIX = "report:"


def report_rule(name: str) -> str:
    """The rule name (and outbox lane) a report's notifications carry: `report:NAME`."""
    return REPORT_RULE_PREFIX + name


# Sessions listed per kind in the document; its counts say how many there are in all.
MAX_LISTED = 100
TOP = 5  # the longest runs, the sessions that used the most credits
# An interruption followed this soon by a completion was a finish (the rules' default
# settle window for session.interrupted, watcher.core.rulestate).
INTERRUPT_SETTLE = timedelta(seconds=30)
# Running with no progress for this long counts as stuck now (a rule's `for` is per rule).
STUCK_AFTER = timedelta(minutes=30)
# What happened in the window, each a list of sessions (with how many times).
HAPPENED = ("started", "finished", "interrupted", "completed", "archived", "deleted")
# How sessions are at the time the report is made.
NOW = ("stuck", "waiting")
KINDS = HAPPENED + NOW


@dataclass(frozen=True, slots=True)
class Report:
    """One report for one window: its JSON document (webhook `data`, `report --json`)."""

    name: str
    start: datetime
    end: datetime
    document: Mapping[str, JSONValue]

    @property
    def is_empty(self) -> bool:
        """Nothing happened in the window and no session is stuck or waiting now."""
        return bool(self.document["empty"])


@dataclass(frozen=True, slots=True)
class _Counters:
    """Cumulative counters of a session at one time (None: the API did not say)."""

    active_ms: float | None = None
    usage: TokenUsage | None = None


_ZERO = _Counters(0.0, TokenUsage(factory_credits=0.0))


@dataclass(frozen=True, slots=True)
class _Run:
    session_id: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float
    outcome: str  # finished, completed (still busy), interrupted, running


@dataclass(frozen=True, slots=True)
class _Use:
    """What one session used in the window."""

    active_s: float = 0.0
    tokens: Mapping[str, float] = field(default_factory=dict)
    credits: float | None = None


@dataclass
class _Tally:
    """What the window's events say about one session (filled while walking them)."""

    ref: SessionRef
    times: Counter[str] = field(default_factory=Counter)
    first: _Counters | None = None
    last: _Counters | None = None
    last_at: datetime | None = None
    run_start: datetime | None = None
    # An interruption waiting out INTERRUPT_SETTLE: when seen, and its run.
    pending: tuple[datetime, _Run | None] | None = None


def _counters_of(ref: SessionRef | None) -> _Counters | None:
    if ref is None or (ref.active_ms is None and ref.usage is None):
        return None
    return _Counters(ref.active_ms, ref.usage)


def _matcher(spec: ReportSpec) -> Rule:
    """The report's session filters as a rule's, so they match exactly as rules do."""
    return Rule(
        name=spec.name,
        on=(),
        notify=spec.notify,
        session_globs=spec.session_globs,
        labels=spec.labels,
        title_globs=spec.title_globs,
        tags=spec.tags,
    )


def _current_ref(stored: StoredSession, fallback: SessionRef | None) -> SessionRef:
    """The session as it is now: its latest event's ref with its stored state's facts."""
    ref = stored.ref or fallback or SessionRef(id=stored.session_id)
    state = stored.state
    snapshot = state.last if isinstance(state, Gone) else state
    if snapshot is None:
        return ref
    return replace(
        ref,
        title=snapshot.title or ref.title,
        status="deleted" if isinstance(state, Gone) else snapshot.status,
        tags=snapshot.tags or ref.tags,
        created_at=snapshot.created_at,
    )


def _link(ref: SessionRef, session_url: str | None) -> str | None:
    if session_url:
        return session_url.replace("{id}", ref.id)
    return ref.url


def _item(ref: SessionRef, session_url: str | None) -> dict[str, JSONValue]:
    return {
        "id": ref.id,
        "name": ref.display_name,
        "url": _link(ref, session_url),
        "status": ref.status or None,
    }


def _walk(
    history: ReportHistory, start: datetime, end: datetime, tallies: dict[str, _Tally]
) -> list[_Run]:
    """Count what each session did from the window's events; the runs that ended in it."""
    runs: list[_Run] = []
    batches: dict[tuple[str, datetime], list[Event]] = {}
    for recorded in history.events:
        session = recorded.event.session
        if session is None or recorded.event.type not in _SESSION_EVENTS:
            continue
        batches.setdefault((session.id, recorded.recorded_at), []).append(recorded.event)
    for (sid, at), batch in batches.items():
        tally = tallies.setdefault(sid, _Tally(batch[-1].session or SessionRef(id=sid)))
        tally.ref = batch[-1].session or tally.ref  # the latest name, labels and status
        for event in batch:
            counters = _counters_of(event.session)
            if counters is not None:
                tally.first = tally.first or counters
                tally.last, tally.last_at = counters, at
        completes = any(e.type is EventType.COMPLETED for e in batch)
        runs += _settle(tally, at, finished=completes)
        runs += _batch(tally, batch, at, history.run_starts.get(sid), start, end)
    for tally in tallies.values():
        runs += _settle(tally, None, finished=False)
    return runs


def _settle(tally: _Tally, at: datetime | None, *, finished: bool) -> list[_Run]:
    """The pending interruption of `tally` decided by the poll at `at`: a completion within
    INTERRUPT_SETTLE makes it part of that finish, anything else confirms it.
    """
    if tally.pending is None:
        return []
    seen, run = tally.pending
    tally.pending = None
    if finished and at is not None and at - seen <= INTERRUPT_SETTLE:
        tally.run_start = run.started_at if run is not None else tally.run_start
        return []
    tally.times["interrupted"] += 1
    return [] if run is None else [run]


_SESSION_EVENTS = frozenset(
    {
        EventType.DISCOVERED,
        EventType.STATUS_CHANGED,
        EventType.COMPLETED,
        EventType.MESSAGES_ADDED,
        EventType.ARCHIVED,
        EventType.DELETED,
    }
)


def _batch(
    tally: _Tally,
    batch: list[Event],
    at: datetime,
    before: datetime | None,
    start: datetime,
    end: datetime,
) -> list[_Run]:
    """One poll's events of one session (recorded at `at`): what began, ended or happened.

    The lifecycle's meanings (watcher.core.lifecycle): a run starts when the
    status becomes running; it finished when a new completion leaves the session
    idle, and was interrupted when it went from running to idle without one (and
    no completion followed within INTERRUPT_SETTLE, as the rules settle it).
    """
    runs: list[_Run] = []
    sid = tally.ref.id
    completions = [e for e in batch if e.type is EventType.COMPLETED]
    for event in batch:
        data = event.data
        if event.type is EventType.STATUS_CHANGED and data.get("to") == KnownStatus.RUNNING:
            tally.times["started"] += 1
            tally.run_start = event.occurred_at
        elif event.type is EventType.DISCOVERED and event.session is not None:
            created = event.session.created_at
            if created is not None and start < created <= end:
                tally.times["started"] += 1  # a new session is a started one
                tally.run_start = created
        elif event.type is EventType.ARCHIVED:
            tally.times["archived"] += 1
        elif event.type is EventType.DELETED:
            tally.times["deleted"] += 1
        elif (
            event.type is EventType.STATUS_CHANGED
            and data.get("from") == KnownStatus.RUNNING
            and data.get("to") == KnownStatus.IDLE
            and not completions
        ):
            run = _ended(sid, tally.run_start or before, event.occurred_at, "interrupted")
            tally.pending = (at, run)
            tally.run_start = None
    for event in completions:
        tally.times["completed"] += 1
        idle = event.session is not None and event.session.status == KnownStatus.IDLE
        if idle:
            tally.times["finished"] += 1
        summary = event.data.get("run")
        began = _when(summary.get("started_at")) if isinstance(summary, Mapping) else None
        outcome = "finished" if idle else "completed"
        run = _ended(sid, tally.run_start or began or before, event.occurred_at, outcome)
        runs += [] if run is None else [run]
        tally.run_start = None
    return runs


def _ended(sid: str, began: datetime | None, ended: datetime, outcome: str) -> _Run | None:
    """The run that began at `began` and ended at `ended` (None: its start is not known)."""
    if began is None or began > ended:
        return None
    return _Run(sid, began, ended, (ended - began).total_seconds(), outcome)


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _use(first: _Counters | None, last: _Counters | None) -> _Use:
    """What was used between two readings of a session's cumulative counters."""
    if last is None:
        return _Use()
    base = first or _ZERO

    def delta(after: float | None, before: float | None) -> float:
        if after is None:
            return 0.0
        return max(0.0, after - (before or 0.0))

    active = delta(last.active_ms, base.active_ms) / 1000
    tokens: dict[str, float] = {}
    credits = None
    if last.usage is not None:
        now, then = last.usage, base.usage or TokenUsage()
        tokens = {
            "input": delta(now.input_tokens, then.input_tokens),
            "output": delta(now.output_tokens, then.output_tokens),
            "cache": delta(
                now.cache_creation_tokens + now.cache_read_tokens,
                then.cache_creation_tokens + then.cache_read_tokens,
            ),
            "thinking": delta(now.thinking_tokens, then.thinking_tokens),
        }
        tokens["total"] = sum(tokens.values())
        if now.factory_credits is not None:
            credits = delta(now.factory_credits, then.factory_credits)
    return _Use(active, tokens, credits)


def _session_use(
    tally: _Tally | None,
    stored: StoredSession | None,
    baseline: Event | None,
    start: datetime,
    end: datetime,
) -> _Use:
    """A session's use in the window: its last reading in it less its reading at the start.

    The reading at the start is its latest event before the window; without one,
    zero for a session created in the window, else its first reading in it (a
    session first seen in the window: what it did before is not this window's).
    """
    last = tally.last if tally is not None else None
    last_at = tally.last_at if tally is not None else None
    state = stored.state if stored is not None else None
    at = stored.stored_at if stored is not None else None
    # The stored state is the latest reading when it was stored in the window after
    # the last event (counters move without events: a poll with new usage only).
    fresh = at is not None and start < at <= end and (last_at is None or at >= last_at)
    if isinstance(state, Snapshot) and fresh:
        last = _Counters(state.assistant_active_ms, state.token_usage)
    if last is None:
        return _Use()
    first = _counters_of(baseline.session) if baseline is not None else None
    if first is None:
        created = None
        if stored is not None and isinstance(stored.state, Snapshot):
            created = stored.state.created_at
        elif tally is not None:
            created = tally.ref.created_at
        if created is not None and created > start:
            first = _ZERO
        else:
            first = tally.first if tally is not None and tally.first is not None else last
    return _use(first, last)


def _condition(stored: StoredSession, now: datetime) -> tuple[str, datetime | None] | None:
    """`stuck` or `waiting` and since when, for a watched session in that condition now."""
    state = stored.state
    if stored.unwatched_since is not None or not isinstance(state, Snapshot):
        return None  # no longer watched, deleted, or unreadable: how it is now is not known
    track = stored.track
    if state.status == KnownStatus.PENDING:
        since = condition_since(track, EventType.WAITING) if track is not None else None
        return ("waiting", since)
    if state.status == KnownStatus.RUNNING and track is not None:
        since = condition_since(track, EventType.STUCK)
        if since is not None and now - since >= STUCK_AFTER:
            return ("stuck", since)
    return None


def _ongoing(stored: StoredSession, end: datetime) -> _Run | None:
    """The run a watched session is in now, when it began by `end`."""
    state, track = stored.state, stored.track
    if stored.unwatched_since is not None or not isinstance(state, Snapshot):
        return None
    if state.status != KnownStatus.RUNNING or track is None or track.run is None:
        return None
    began = track.run.started_at
    if began is None or began > end:
        return None
    return _Run(stored.session_id, began, None, (end - began).total_seconds(), "running")


def _iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC ending in Z, as every time in a webhook body."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _listing(
    ids: list[str], kind: str, entry: Callable[[str, str], dict[str, JSONValue]]
) -> list[JSONValue]:
    return [entry(sid, kind) for sid in ids[:MAX_LISTED]]


def build_report(
    spec: ReportSpec,
    history: ReportHistory,
    start: datetime,
    end: datetime,
    now: datetime,
    session_url: str | None,
) -> Report:
    """The report of `spec` for the window `(start, end]`, from the stored `history`.

    What happened comes from the events recorded in the window; what is stuck
    or waiting, and the runs still going, from the sessions as stored at `now`.
    Only sessions the report's filters match are counted; every one named is
    linked with `session_url` (`{id}` replaced).
    """
    matcher = _matcher(spec)
    tallies: dict[str, _Tally] = {}
    runs = _walk(history, start, end, tallies)
    stored = {s.session_id: s for s in history.sessions}
    refs: dict[str, SessionRef] = {sid: t.ref for sid, t in tallies.items()}
    for sid, s in stored.items():
        refs[sid] = _current_ref(s, refs.get(sid))

    def wanted(sid: str) -> bool:
        return judge_session(matcher, refs[sid]).matched

    conditions: dict[str, tuple[str, datetime | None]] = {}
    for sid, s in stored.items():
        found = _condition(s, now)
        if found is not None and wanted(sid):
            conditions[sid] = found
        ongoing = _ongoing(s, end)
        if ongoing is not None:
            runs.append(ongoing)
    runs = [r for r in runs if wanted(r.session_id)]
    moved = {
        s.session_id
        for s in history.sessions
        if s.stored_at is not None and start < s.stored_at <= end
    }
    uses: dict[str, _Use] = {}
    for sid in sorted(set(tallies) | moved):
        if wanted(sid):
            uses[sid] = _session_use(
                tallies.get(sid), stored.get(sid), history.baselines.get(sid), start, end
            )
    members: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for sid in sorted(tallies, key=lambda s: refs[s].display_name.lower()):
        if not wanted(sid):
            continue
        for kind in HAPPENED:
            if tallies[sid].times[kind]:
                members[kind].append(sid)
    for sid, (kind, _) in sorted(conditions.items(), key=lambda c: (c[1][1] or now, c[0])):
        members[kind].append(sid)

    def entry(sid: str, kind: str) -> dict[str, JSONValue]:
        body = _item(refs[sid], session_url)
        if kind in HAPPENED:
            body["times"] = tallies[sid].times[kind]
        else:
            body["since"] = _iso(conditions[sid][1])
        return body

    runs.sort(key=lambda r: (-r.duration_s, r.session_id))
    longest = [
        {
            "session": _item(refs[r.session_id], session_url),
            "started_at": _iso(r.started_at),
            "ended_at": _iso(r.ended_at),
            "duration_s": json_number(round(r.duration_s, 3)),
            "outcome": r.outcome,
        }
        for r in runs[:TOP]
    ]
    totals = _totals(uses.values())
    by_credits = sorted(
        ((sid, u.credits) for sid, u in uses.items() if u.credits),
        key=lambda c: (-(c[1] or 0.0), c[0]),
    )
    top = [
        {"session": _item(refs[sid], session_url), "credits": json_number(credits or 0.0)}
        for sid, credits in by_credits[:TOP]
    ]
    happened = any(members[k] for k in KINDS) or bool(runs)
    used = totals["active_s"] or totals["credits"] or totals["tokens"].get("total")
    document: dict[str, JSONValue] = {
        "report": spec.name,
        "window": {
            "start": _iso(start),
            "end": _iso(end),
            "seconds": json_number(round((end - start).total_seconds(), 3)),
            "timezone": spec.timezone,
        },
        "generated_at": _iso(now),
        "empty": not (happened or used),
        "counts": {kind: len(members[kind]) for kind in KINDS},
        "sessions": {kind: _listing(members[kind], kind, entry) for kind in KINDS},
        "longest_runs": longest,
        "active_s": totals["active_s"],
        "tokens": totals["tokens"],
        "credits": totals["credits"],
        "top_credits": top,
        "group_by": spec.group_by,
        "groups": None if spec.group_by is None else _groups(spec.group_by, refs, members, uses),
    }
    return Report(spec.name, start, end, document)


def _totals(uses: Iterable[_Use]) -> dict[str, Any]:
    tokens: Counter[str] = Counter()
    credits: float | None = None
    active = 0.0
    for use in uses:
        active += use.active_s
        tokens.update(use.tokens)
        if use.credits is not None:
            credits = (credits or 0.0) + use.credits
    keys = ("input", "output", "cache", "thinking", "total")
    return {
        "active_s": json_number(round(active, 3)),
        "tokens": {k: json_number(tokens[k]) for k in keys},
        "credits": None if credits is None else json_number(credits),
    }


def _groups(
    label: str,
    refs: Mapping[str, SessionRef],
    members: Mapping[str, list[str]],
    uses: Mapping[str, _Use],
) -> list[JSONValue]:
    """Per value of the label `label` (null: sessions without it): counts and use."""
    values: dict[str | None, set[str]] = {}
    named = {sid for kind in KINDS for sid in members[kind]} | set(uses)
    for sid in named:
        values.setdefault(refs[sid].labels.get(label), set()).add(sid)
    out: list[JSONValue] = []
    for value in sorted(values, key=lambda v: (v is None, v or "")):
        ids = values[value]
        totals = _totals(u for sid, u in uses.items() if sid in ids)
        out.append(
            {
                "value": value,
                "counts": {k: len([s for s in members[k] if s in ids]) for k in KINDS},
                "active_s": totals["active_s"],
                "credits": totals["credits"],
            }
        )
    return out


def report_event(spec: ReportSpec, report: Report, scheduled_at: datetime) -> Event:
    """The report as the one event the outbox delivers, the same id for the same run."""
    return Event(
        id=f"report:{spec.name}:{scheduled_at.isoformat()}",
        type=EventType.REPORT,
        occurred_at=scheduled_at,
        session=None,
        data=dict(report.document),
    )
