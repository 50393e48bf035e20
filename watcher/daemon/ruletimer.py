"""The rule timer: time-based rules (a session idle for a while, a digest window
closing) fire on time, even for slowly polled sessions, because the rules are
evaluated every `RULES_TICK` seconds as well as on every poll.
"""

from __future__ import annotations

import logging

from watcher.daemon.eventlog import describe, log_decisions
from watcher.daemon.live import Part, Wiring
from watcher.intake.tick import TickReport, apply_tick

log = logging.getLogger("watcher.daemon")
RULES_TICK = 1.0  # seconds between timer evaluations of time-based rules and digests


class RuleTimer(Part):
    """Evaluates time-based rules and releases due digests, now or every tick."""

    def __init__(self, wiring: Wiring) -> None:
        super().__init__(wiring)
        self.failing: set[str] = set()  # sessions whose evaluation raised: logged once

    async def tick(self) -> TickReport:
        """Evaluate time-based rules and release due digests now."""
        now = self.clock()
        report = await self.db(
            apply_tick, self.store, self.live.settings, self.book.watched, now, self.failing
        )
        for session_id, decisions in report.decisions.items():
            log_decisions(session_id, decisions)
        for event in {e.id: e for e, _ in report.routes}.values():
            self.metrics.events.labels(event.type).inc()
        for event, r in report.routes:
            log.info("event %s %s -> %s", event.type, describe(event), r.target)
        if report.new_rows:
            self.wake(report.targets)
        return report

    async def run(self) -> None:
        """Tick every `RULES_TICK` seconds until the run stops."""
        await self.live.every(RULES_TICK, self.tick, what="rule timer")
