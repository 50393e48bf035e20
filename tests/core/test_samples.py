"""Synthetic events: the test notification that `test-notify` and `doctor --send` send."""

from __future__ import annotations

from datetime import timedelta

from tests.core.factories import T0
from watcher.core.model import EventType
from watcher.core.samples import build_test_notification


def test_a_test_notification_says_it_is_a_test_and_who_sent_it() -> None:
    """Its session is the test session named by its sender; its data carries `test: true`."""
    event = build_test_notification(T0, "doctor", "factory-watcher doctor test notification")
    assert event.type is EventType.STATUS_CHANGED
    assert event.session is not None
    assert (event.session.id, event.session.name) == ("test-session", "doctor")
    assert event.session.title == "factory-watcher doctor test notification"
    assert event.data == {"from": "running", "to": "idle", "test": True}


def test_each_later_test_notification_is_new_and_outranks_the_last() -> None:
    """A later one has another id and a higher sequence (receivers drop stale sequences)."""
    first = build_test_notification(T0, "test-notify", "t")
    later = build_test_notification(T0 + timedelta(seconds=1), "test-notify", "t")
    assert later.id != first.id
    assert later.sequence is not None
    assert first.sequence is not None
    assert later.sequence > first.sequence
