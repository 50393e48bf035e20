"""Judging the Factory API's health from poll outcomes."""

from __future__ import annotations

from datetime import timedelta

from tests.core.factories import T0
from watcher.core.health import ApiHealth, ApiState, observe
from watcher.core.model import EventType

LIMIT = timedelta(minutes=2)


def test_success_while_up_changes_nothing() -> None:
    """The common case is silent."""
    change = observe(ApiHealth(), ok=True, now=T0, threshold=LIMIT)
    assert (change.health, change.event, change.note) == (ApiHealth(), None, None)


def test_blip_shorter_than_threshold_sends_nothing() -> None:
    """A failure that heals before the threshold is logged, never notified."""
    first = observe(ApiHealth(), ok=False, now=T0, threshold=LIMIT, reason="HTTP 503")
    assert first.health.state is ApiState.FAILING
    assert first.event is None
    assert first.note == "Factory API is failing: HTTP 503"
    again = observe(
        first.health, ok=False, now=T0 + timedelta(seconds=60), threshold=LIMIT, reason="timed out"
    )
    assert again.health.state is ApiState.FAILING
    assert again.health.reason == "timed out"
    assert (again.event, again.note) == (None, None)
    healed = observe(again.health, ok=True, now=T0 + timedelta(seconds=90), threshold=LIMIT)
    assert healed.health == ApiHealth()
    assert healed.event is None
    assert healed.note == "Factory API answering again"


def test_long_outage_emits_one_unavailable_and_one_recovered() -> None:
    """Past the threshold: one unavailable event; the first success: one recovered event."""
    health = observe(ApiHealth(), ok=False, now=T0, threshold=LIMIT, reason="x").health
    down = observe(health, ok=False, now=T0 + LIMIT, threshold=LIMIT, reason="HTTP 502")
    assert down.health.state is ApiState.DOWN
    assert down.event is not None
    assert down.event.type is EventType.API_UNAVAILABLE
    assert down.event.data["reason"] == "HTTP 502"
    still = observe(down.health, ok=False, now=T0 + 2 * LIMIT, threshold=LIMIT, reason="x")
    assert still.event is None
    back = observe(still.health, ok=True, now=T0 + 3 * LIMIT, threshold=LIMIT)
    assert back.health == ApiHealth()
    assert back.event is not None
    assert back.event.type is EventType.API_RECOVERED
    assert back.event.data["down_for_s"] == 360.0


def test_rejected_key_is_said_plainly() -> None:
    """An auth failure reads as a rejected key."""
    change = observe(ApiHealth(), ok=False, now=T0, threshold=LIMIT, reason="HTTP 401", auth=True)
    assert change.note == "Factory API rejected the API key: HTTP 401"
    assert change.health.auth
