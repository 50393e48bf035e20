"""The explicit notifier registry: one factory per target kind, fed the message it sends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.core.message import SlackMessage, WebhookMessage
from watcher.core.model import Event, EventType
from watcher.core.render import render_for
from watcher.core.secret import Secret
from watcher.core.settings import (
    SlackTarget,
    SlackWebhookTarget,
    Target,
    TargetKind,
    WebhookTarget,
)
from watcher.notifiers import (
    NOTIFIER_FACTORIES,
    SlackNotifier,
    SlackWebhookNotifier,
    WebhookNotifier,
    build_notifier,
)

SLACK = SlackTarget(
    name="team-slack",
    token=Secret("xoxb-1"),
    channel="C0123ABCD",
    api_url="http://127.0.0.1:9/api/",
)
SLACK_WEBHOOK = SlackWebhookTarget(name="ops", url=Secret("http://127.0.0.1:9/services/T/B/X"))
WEBHOOK = WebhookTarget(name="ci", url="https://hooks.example.com/factory")
EVENT = Event(
    id="evt_1",
    type=EventType.API_RECOVERED,
    occurred_at=datetime(2026, 11, 28, tzinfo=UTC),
    session=None,
)


def message_kind_for(kind: TargetKind) -> type:
    """The message type the delivery worker renders for a target kind."""
    return type(render_for(kind, EVENT, "r"))


@pytest.mark.parametrize(
    ("target", "notifier_type", "message_type"),
    [
        (SLACK, SlackNotifier, SlackMessage),
        (SLACK_WEBHOOK, SlackWebhookNotifier, SlackMessage),
        (WEBHOOK, WebhookNotifier, WebhookMessage),
    ],
)
@pytest.mark.anyio
async def test_build_notifier_for_each_kind(
    target: Target, notifier_type: type, message_type: type
) -> None:
    """Each target kind builds its notifier, named after the target, fed its message kind."""
    notifier = build_notifier(target)
    try:
        assert type(notifier) is notifier_type
        assert notifier.target_name == target.name
        assert message_kind_for(target.kind) is message_type
    finally:
        await notifier.aclose()


def test_every_target_kind_is_registered() -> None:
    """No target kind lacks a factory or a message kind."""
    assert set(NOTIFIER_FACTORIES) == set(TargetKind)
    for kind in TargetKind:
        assert message_kind_for(kind) in (SlackMessage, WebhookMessage)


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        (TargetKind.SLACK, WEBHOOK),
        (TargetKind.SLACK_WEBHOOK, SLACK),
        (TargetKind.WEBHOOK, SLACK_WEBHOOK),
    ],
)
def test_a_factory_refuses_a_target_of_another_kind(kind: TargetKind, target: Target) -> None:
    """Factories check the target type instead of failing later on a missing attribute."""
    with pytest.raises(TypeError, match="expected"):
        NOTIFIER_FACTORIES[kind](target)
