"""Notifiers, one per destination kind, and the explicit registry that builds them."""

from __future__ import annotations

from collections.abc import Callable

from watcher.core.settings import (
    SlackTarget,
    SlackWebhookTarget,
    Target,
    TargetKind,
    WebhookTarget,
)
from watcher.notifiers.base import Notifier
from watcher.notifiers.slack import SlackNotifier
from watcher.notifiers.slack_webhook import SlackWebhookNotifier
from watcher.notifiers.webhook import WebhookNotifier

__all__ = [
    "NOTIFIER_FACTORIES",
    "Notifier",
    "SlackNotifier",
    "SlackWebhookNotifier",
    "WebhookNotifier",
    "build_notifier",
]


def _slack(target: Target) -> Notifier:
    if not isinstance(target, SlackTarget):
        raise TypeError(f"expected SlackTarget, got {type(target).__name__}")
    return SlackNotifier(target)


def _slack_webhook(target: Target) -> Notifier:
    if not isinstance(target, SlackWebhookTarget):
        raise TypeError(f"expected SlackWebhookTarget, got {type(target).__name__}")
    return SlackWebhookNotifier(target)


def _webhook(target: Target) -> Notifier:
    if not isinstance(target, WebhookTarget):
        raise TypeError(f"expected WebhookTarget, got {type(target).__name__}")
    return WebhookNotifier(target)


NOTIFIER_FACTORIES: dict[TargetKind, Callable[[Target], Notifier]] = {
    TargetKind.SLACK: _slack,
    TargetKind.SLACK_WEBHOOK: _slack_webhook,
    TargetKind.WEBHOOK: _webhook,
}


def build_notifier(target: Target) -> Notifier:
    """Build the notifier for `target` from the registry (TypeError on a kind mismatch)."""
    return NOTIFIER_FACTORIES[target.kind](target)
