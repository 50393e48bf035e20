"""The log lines of what a poll or a timer tick found: one line per event (where it
goes, or why it does not), one per rule decision other than a send.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from watcher.core.model import Event, EventType
from watcher.core.rulestate import Decision, Outcome
from watcher.intake.poll import PollReport
from watcher.ops.logs import context

log = logging.getLogger("watcher.daemon")


def log_decisions(session_id: str, decisions: Sequence[Decision]) -> None:
    """One line per rule decision that did not send (held, muted, quiet, ...)."""
    for decision in decisions:
        if decision.outcome is not Outcome.SENT:
            log.info(
                "rule %s: %s %s %s: %s",
                decision.rule,
                decision.event.type,
                session_id,
                decision.outcome,
                decision.reason,
            )


def log_events(report: PollReport) -> None:
    """One line per event a poll found, with the targets it was queued for."""
    decided = {d.event.id for d in report.decisions}
    for event in report.events:
        targets = [r.target for e, r in report.routes if e.id == event.id]
        log.info(
            "event %s %s %s -> %s",
            event.type,
            report.session_id,
            describe(event),
            ", ".join(targets)
            or ("not queued (see the rule lines)" if event.id in decided else "no rule matched"),
            extra=context(session=report.session_id, event_id=event.id, type=str(event.type)),
        )


def describe(event: Event) -> str:
    """An event's data in a few words, for its log line."""
    data = event.data
    if event.type is EventType.DIGEST:
        return f"window={data.get('window')} count={data.get('count')}"
    if event.type is EventType.REPORT:
        return f"report={data.get('report')} empty={data.get('empty')} counts={data.get('counts')}"
    if "from" in data:
        return f"{data['from']} -> {data['to']}"
    return " ".join(f"{k}={v}" for k, v in data.items())
