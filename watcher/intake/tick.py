"""The rule timer's work: time-based rules of due sessions and the release of digests.

Only watched sessions are evaluated: a session that left the watch set (aged out
of discovery, removed from the config) has its wake-up cleared instead, so its
time-based rules (stuck, waiting, long_running, repeat) stop firing, and the
timer does not find it due again on every tick. Its memory is kept: watched
again, its next poll evaluates its rules afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableSet
from dataclasses import dataclass, field
from datetime import datetime

from watcher.core.diff import session_ref
from watcher.core.model import Event, Snapshot
from watcher.core.rules import Route
from watcher.core.rulestate import (
    Decision,
    Evaluation,
    Mute,
    digest_event,
    digest_rule,
    evaluate,
)
from watcher.core.settings import Settings, WatchedSession
from watcher.store import HeldRow, IntakeStore

log = logging.getLogger("watcher.intake.tick")


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one timer evaluation queued, and the decisions it took per session."""

    routes: tuple[tuple[Event, Route], ...] = ()
    new_rows: int = 0
    decisions: Mapping[str, tuple[Decision, ...]] = field(default_factory=dict)

    @property
    def targets(self) -> frozenset[str]:
        """Targets that got new work."""
        return frozenset(r.target for _, r in self.routes)


def group_digests(rows: list[HeldRow]) -> list[tuple[Event, Route, tuple[int, ...]]]:
    """One digest per (target, window occurrence), items in the order they were held."""
    groups: dict[tuple[str, str, datetime], list[HeldRow]] = {}
    for row in rows:
        held = row.held
        groups.setdefault((held.target, held.window, held.release_at), []).append(row)
    out = []
    for (target, window, release_at), members in groups.items():
        items = [(m.held.event, m.held.rule) for m in members]
        event = digest_event(target, window, release_at, items)
        out.append((event, Route(digest_rule(window), target), tuple(m.id for m in members)))
    return out


def apply_tick(
    store: IntakeStore,
    settings: Settings,
    watched: Mapping[str, WatchedSession],
    now: datetime,
    failing: MutableSet[str] | None = None,
) -> TickReport:
    """Evaluate the rules of every watched session whose memory asked to be woken by `now`,
    then queue the digests of quiet-hours windows that have ended. Each session commits
    alone; a due session no longer watched has its wake-up cleared, nothing more.

    `failing` (kept by the caller across ticks) holds the sessions whose evaluation
    raised: such a session stays due, so its traceback is logged once, not every tick,
    and a line says when it evaluates again.
    """
    failing = set() if failing is None else failing
    mutes = store.active_mutes(now)
    routes: list[tuple[Event, Route]] = []
    decisions: dict[str, tuple[Decision, ...]] = {}
    new_rows = 0
    for session_id in store.due_sessions(now):
        try:
            if session_id in watched:
                found = _tick_session(store, settings, watched, session_id, mutes, now)
            else:
                found = _sleep_session(store, session_id, now)
        except Exception:  # one session's trouble must not hold back the others
            if session_id in failing:
                log.debug("rule timer still failing for session %s", session_id, exc_info=True)
            else:
                failing.add(session_id)
                log.exception(
                    "rule timer failed for session %s (logged once until it recovers)",
                    session_id,
                )
            continue
        if session_id in failing:
            failing.discard(session_id)
            log.info("rule timer evaluates session %s again", session_id)
        new_rows += found.new_rows
        routes += found.routes
        decisions.update(found.decisions)
    due = store.due_held(now)
    if due:
        digests = group_digests(due)
        pairs = [(event, r) for event, r, _ in digests]
        ids = [i for _, _, members in digests for i in members]
        new_rows += store.release_digests(pairs, ids, now)
        routes += pairs
    return TickReport(tuple(routes), new_rows, decisions)


def _sleep_session(store: IntakeStore, session_id: str, now: datetime) -> TickReport:
    """Clear the wake-up of a session no longer watched; its memory stays as it was."""
    store.record_evaluation(session_id, Evaluation(store.load_memory(session_id)), now)
    return TickReport()


def _tick_session(
    store: IntakeStore,
    settings: Settings,
    watched: Mapping[str, WatchedSession],
    session_id: str,
    mutes: list[Mute],
    now: datetime,
) -> TickReport:
    state = store.load_state(session_id)
    shown = state if isinstance(state, Snapshot) else getattr(state, "last", None)
    ref = session_ref(
        watched[session_id],
        shown,
        settings.factory.session_url,
    )
    memory = store.load_memory(session_id)
    evaluation = evaluate(
        settings.rules, settings.quiet_hours, mutes, memory, ref, now, observed=None
    )
    new_rows = store.record_evaluation(session_id, evaluation, now)
    decisions = {session_id: evaluation.decisions} if evaluation.decisions else {}
    return TickReport(evaluation.routes, new_rows, decisions)
