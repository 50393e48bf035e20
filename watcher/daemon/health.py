"""API health: every answer of the Factory API is folded into `core.health`; the
`api_up` gauge follows it, and a declared outage or recovery becomes a
`watcher.*` event routed through the rules and the store like any other.

After a declared outage, every session returns to its normal rhythm at once
(the backoff is reset), not when its own backoff would have run out.

The health state moves first, so concurrent polls derive each event once; an
event whose recording fails is kept and recorded again with the next answer
(its id is stable, so a second recording is harmless): a full disk at the
moment the API goes down delays the outage notice, never loses it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from watcher.core.discovery import ListPage
from watcher.core.health import ApiHealth, ApiState, observe
from watcher.core.model import Event
from watcher.core.poll import Answer, FetchFailed, FetchFailureKind
from watcher.core.rules import route
from watcher.core.rulestate import active_mute
from watcher.daemon.live import Part, Wiring

log = logging.getLogger("watcher.daemon")


class HealthWatch(Part):
    """Folds answers into the API's health and reports its changes."""

    def __init__(self, wiring: Wiring) -> None:
        super().__init__(wiring)
        self.health = ApiHealth()
        self.unrecorded: dict[str, Event] = {}  # declared but not yet stored, by event id

    async def observe(self, result: Answer | ListPage, now: datetime) -> None:
        """Fold one answer (a failure, or anything else: a success) into the API's health."""
        failed = isinstance(result, FetchFailed)
        if not failed and self.health.state is ApiState.UP and not self.unrecorded:
            return  # the hot path: nothing to fold in
        change = observe(
            self.health,
            ok=not failed,
            now=now,
            threshold=self.live.settings.factory.unavailable_after,
            reason=result.reason if isinstance(result, FetchFailed) else "",
            auth=isinstance(result, FetchFailed) and result.kind is FetchFailureKind.AUTH,
        )
        recovered = self.health.state is ApiState.DOWN and not failed
        self.health = change.health
        self.metrics.api_up.set(1 if self.health.state is ApiState.UP else 0)
        if recovered:
            self.backoff.reset()
        if change.note:
            level = logging.ERROR if change.health.auth else logging.WARNING
            log.log(level if failed else logging.INFO, "%s", change.note)
        if change.event is not None:
            self.metrics.events.labels(change.event.type).inc()
            self.unrecorded[change.event.id] = change.event
        for event in list(self.unrecorded.values()):
            await self._record(event, now)

    async def _record(self, event: Event, now: datetime) -> None:
        """Route and store one health event; on failure keep it for the next answer."""
        try:
            mutes = await self.db(self.store.active_mutes, now)
            routes = tuple(
                (event, r)
                for r in route(self.live.settings.rules, event)
                if active_mute(mutes, r.rule, None, now) is None
            )
            new = await self.db(self.store.record_events, (event,), routes, now)
        except Exception as error:  # the store's trouble must not fail the poll that saw it
            log.warning(
                "event %s could not be recorded (%s); trying again with the next answer",
                event.type,
                error,
            )
            return
        self.unrecorded.pop(event.id, None)
        log.info(
            "event %s -> %s",
            event.type,
            ", ".join(r.target for _, r in routes) or "no rule matched",
        )
        if new:
            self.wake({r.target for _, r in routes})
