"""Whether the Factory API is usable, judged from poll outcomes over time.

A short blip is not worth a message; a failure that lasts longer than the
threshold becomes one `watcher.api_unavailable` event, and the first good
poll after it one `watcher.api_recovered`, instead of per-session noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from watcher.core.diff import event_id
from watcher.core.model import Event, EventType


class ApiState(StrEnum):
    """The API as the watcher sees it."""

    UP = "up"
    FAILING = "failing"  # failing, but not yet for longer than the threshold
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ApiHealth:
    """Health so far; `since` is when the current failure streak began."""

    state: ApiState = ApiState.UP
    since: datetime | None = None
    reason: str = ""
    auth: bool = False


@dataclass(frozen=True, slots=True)
class HealthChange:
    """The new health, the event to emit if any, and a line for the log."""

    health: ApiHealth
    event: Event | None
    note: str | None


def observe(
    health: ApiHealth,
    *,
    ok: bool,
    now: datetime,
    threshold: timedelta,
    reason: str = "",
    auth: bool = False,
) -> HealthChange:
    """Fold one poll outcome into the API's health."""
    if ok:
        if health.state is ApiState.DOWN and health.since is not None:
            down_for = (now - health.since).total_seconds()
            event = Event(
                id=event_id("", EventType.API_RECOVERED, {"since": health.since.isoformat()}),
                type=EventType.API_RECOVERED,
                occurred_at=now,
                session=None,
                data={"down_since": health.since.isoformat(), "down_for_s": down_for},
            )
            return HealthChange(
                ApiHealth(), event, f"Factory API reachable again after {down_for:.0f}s"
            )
        note = "Factory API answering again" if health.state is ApiState.FAILING else None
        return HealthChange(ApiHealth(), None, note)
    if health.state is ApiState.UP:
        failing = ApiHealth(ApiState.FAILING, now, reason, auth)
        what = "rejected the API key" if auth else "is failing"
        return HealthChange(failing, None, f"Factory API {what}: {reason}")
    since = health.since or now
    updated = replace(health, reason=reason, auth=auth)
    if health.state is ApiState.FAILING and now - since >= threshold:
        event = Event(
            id=event_id("", EventType.API_UNAVAILABLE, {"since": since.isoformat()}),
            type=EventType.API_UNAVAILABLE,
            occurred_at=now,
            session=None,
            data={"since": since.isoformat(), "reason": reason, "auth": auth},
        )
        note = f"Factory API unavailable for {(now - since).total_seconds():.0f}s: {reason}"
        return HealthChange(replace(updated, state=ApiState.DOWN), event, note)
    return HealthChange(updated, None, None)
