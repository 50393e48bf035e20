"""`explain SESSION`: a session's recent transitions and, per rule, what it decided and why."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from watcher.commands.exits import EX_OK
from watcher.core.diff import session_ref
from watcher.core.model import Event, Snapshot
from watcher.core.quiet import active_window
from watcher.core.render import headline
from watcher.core.rules import judge_session
from watcher.core.rulestate import RuleMemory, active_mute
from watcher.core.settings import Rule, Settings, WatchedSession
from watcher.store import DecisionRow, Store
from watcher.store.open import open_store


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def find_session(settings: Settings, wanted: str) -> WatchedSession:
    """The configured session with id or name `wanted`, else a bare one with that id."""
    for watched in settings.sessions:
        if wanted in (watched.id, watched.name):
            return watched
    return WatchedSession(wanted)


def _rule_report(
    rule: Rule,
    settings: Settings,
    store: Store,
    watched: WatchedSession,
    memory: RuleMemory | None,
    decisions: list[DecisionRow],
    now: datetime,
    snapshot: Snapshot | None,
) -> dict[str, Any]:
    ref = session_ref(watched, snapshot, settings.factory.session_url)
    verdict = judge_session(rule, ref)
    held_back: list[str] = []
    if not verdict.matched:
        held_back.append(f"condition: {verdict.reason}")
    mute = active_mute(store.active_mutes(now), rule.name, ref, now)
    if mute is not None:
        until = "until unmuted" if mute.until is None else f"until {_iso(mute.until)}"
        held_back.append(f"mute: {mute.kind} {mute.value!r} {until}")
    if rule.quiet_hours and not rule.urgent and rule.quiet_hours in settings.quiet_hours:
        window = active_window(settings.quiet_hours[rule.quiet_hours], now)
        if window is not None:
            held_back.append(f"quiet hours: {window.name!r} until {_iso(window.end)}")
    settling = []
    if memory is not None:
        if rule.cooldown and memory.last_sent and now < memory.last_sent + rule.cooldown:
            held_back.append(f"cooldown: until {_iso(memory.last_sent + rule.cooldown)}")
        for pending in memory.settling:
            settling.append({"event": str(pending.event.type), "due": _iso(pending.due)})
            held_back.append(f"settle: {pending.event.type} settles at {_iso(pending.due)}")
    mine = [d for d in decisions if d.rule == rule.name]
    return {
        "name": rule.name,
        "on": list(rule.on),
        "notify": list(rule.notify),
        "conditions_hold": verdict.matched,
        "condition": verdict.reason,
        "held_back_by": held_back,
        "settling": settling,
        "episodes": {}
        if memory is None
        else {k: {"since": _iso(e.since), "notified": e.fired} for k, e in memory.episodes.items()},
        "decisions": [
            {
                "at": _iso(d.at),
                "event": d.event_type,
                "event_id": d.event_id,
                "outcome": str(d.outcome),
                "reason": d.reason,
            }
            for d in mine
        ],
    }


def _transition(event: Event) -> dict[str, Any]:
    return {
        "at": _iso(event.occurred_at),
        "type": str(event.type),
        "id": event.id,
        "data": dict(event.data),
        "headline": headline(event),
    }


def explain(
    settings: Settings, store: Store, wanted: str, now: datetime, limit: int = 20
) -> dict[str, Any]:
    """Everything `explain` shows about one session, as plain data (also the `--json` form)."""
    watched = find_session(settings, wanted)
    state = store.load_state(watched.id)
    snapshot = state if isinstance(state, Snapshot) else getattr(state, "last", None)
    memory = store.load_memory(watched.id)
    decisions = store.recent_decisions(watched.id, limit=200)
    track = memory.track
    return {
        "session": {
            "id": watched.id,
            "name": watched.name,
            "known": state is not None,
            "status": None if snapshot is None else snapshot.status,
            "title": None if snapshot is None else snapshot.title,
            "status_since": None if track is None else _iso(track.status_since),
            "last_progress": None if track is None else _iso(track.progress_at),
        },
        "now": _iso(now),
        "transitions": [_transition(e) for e in store.recent_events(watched.id, limit)],
        "rules": [
            _rule_report(
                rule,
                settings,
                store,
                watched,
                memory.rules.get(rule.name),
                decisions,
                now,
                snapshot,
            )
            for rule in settings.rules
        ],
    }


def explain_text(report: Mapping[str, Any]) -> str:
    """`explain`'s report for people."""
    session = report["session"]
    label = session["id"] + (f" ({session['name']})" if session["name"] else "")
    lines = [f"session {label}"]
    if not session["known"]:
        lines.append("  never polled successfully (nothing stored yet)")
    else:
        lines.append(
            f"  status {session['status']} since {session['status_since'] or '?'}; "
            f"last progress {session['last_progress'] or '?'}"
        )
    lines.append("recent transitions:")
    lines += [f"  {t['at']}  {t['type']}  {t['headline']}" for t in report["transitions"]] or [
        "  none"
    ]
    lines.append("rules:")
    for rule in report["rules"]:
        lines.append(
            f"  {rule['name']} (on {', '.join(rule['on'])} -> {', '.join(rule['notify'])})"
        )
        state = "conditions hold" if rule["conditions_hold"] else "conditions do not hold"
        lines.append(f"    {state}: {rule['condition']}")
        for reason in rule["held_back_by"]:
            lines.append(f"    held back by {reason}")
        for kind, episode in rule["episodes"].items():
            lines.append(f"    {kind} since {episode['since']}, notified {episode['notified']}x")
        for decision in rule["decisions"][-5:]:
            lines.append(
                f"    {decision['at']} {decision['event']}: {decision['outcome']} "
                f"({decision['reason']})"
            )
        if not rule["decisions"]:
            lines.append("    no decisions recorded for this session yet")
    return "\n".join(lines)


def explain_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`explain SESSION [--json]`: the report on stdout, as text or one JSON document."""
    store = open_store(settings)
    try:
        report = explain(settings, store, args.session, datetime.now(UTC))
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2), file=out)
    else:
        print(explain_text(report), file=out)
    return EX_OK
