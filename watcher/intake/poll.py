"""One poll's intake: diff against the stored state, evaluate the rules, commit it all at once.

The daemon calls it for every poll; `replay` calls it for every recorded poll,
so both decide the same notifications from the same history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from watcher.core.diff import diff_states, session_ref, state_changed
from watcher.core.discovery import creation_state
from watcher.core.lifecycle import run_baseline
from watcher.core.model import Event, Gone, SessionState, Snapshot
from watcher.core.poll import FetchFailed, FetchResult, NotFound
from watcher.core.rules import Route
from watcher.core.rulestate import Decision, Observation, evaluate
from watcher.core.settings import QuietHours, Rule, WatchedSession
from watcher.store import IntakeStore


@dataclass(frozen=True, slots=True)
class PollReport:
    """What one poll changed: events found and routes queued, or why it failed."""

    session_id: str
    events: tuple[Event, ...] = ()
    routes: tuple[tuple[Event, Route], ...] = ()
    new_rows: int = 0
    failure: FetchFailed | None = None
    decisions: tuple[Decision, ...] = ()
    state: SessionState | None = None  # the session's state after the poll, when known

    @property
    def targets(self) -> frozenset[str]:
        """Targets that got new work."""
        return frozenset(r.target for _, r in self.routes)


def next_state(previous: SessionState | None, result: FetchResult, session_id: str) -> SessionState:
    """The state to store after a successful poll (a 404 keeps the last good snapshot)."""
    if isinstance(result, NotFound):
        if isinstance(previous, Gone):
            return previous
        return Gone(session_id, previous)
    assert not isinstance(result, FetchFailed)
    return result.snapshot


def apply_poll(
    store: IntakeStore,
    rules: Sequence[Rule],
    session_url: str | None,
    watched: WatchedSession,
    result: FetchResult,
    now: datetime,
    *,
    dry_run: bool = False,
    quiet: Mapping[str, QuietHours] | None = None,
    created_after: datetime | None = None,
) -> PollReport:
    """Diff a poll against the stored state, evaluate the rules, and commit it all at once.

    A failed poll changes nothing: no transition is ever derived from it. An
    unchanged poll still evaluates the rules (a condition may have come due)
    and writes only if that decided something. A session never seen before
    that was created after `created_after` (the first discovery) is diffed
    against its state at creation, so what it did before it was first seen
    is still told.
    """
    if isinstance(result, FetchFailed):
        return PollReport(watched.id, failure=result)
    previous = store.load_state(watched.id)
    current = next_state(previous, result, watched.id)
    changed = state_changed(previous, current)
    shown = current if isinstance(current, Snapshot) else current.last
    ref = session_ref(watched, shown, session_url)
    memory = store.load_memory(watched.id)
    run_start = run_baseline(memory.track, previous)
    events = diff_states(previous, current, ref, now, run_start=run_start) if changed else ()
    before = previous
    if (
        previous is None
        and created_after is not None
        and isinstance(current, Snapshot)
        and current.created_at > created_after
    ):
        before = creation_state(current)
        events += diff_states(before, current, ref, now, run_start=run_baseline(None, before))
    evaluation = evaluate(
        rules,
        quiet or {},
        store.active_mutes(now),
        memory,
        ref,
        now,
        Observation(before, current, events),
    )
    if not changed and not evaluation.decisions and evaluation.memory == memory:
        return PollReport(watched.id, state=current)
    known = {e.id for e in events}
    found = events + tuple(e for e in evaluation.events if e.id not in known)
    routes = evaluation.routes
    if dry_run:
        new_rows = 0
    elif changed:
        new_rows = store.record(watched.id, current, found, routes, now, evaluation=evaluation)
    else:
        new_rows = store.record_evaluation(watched.id, evaluation, now)
    return PollReport(
        watched.id, found, routes, new_rows, decisions=evaluation.decisions, state=current
    )
