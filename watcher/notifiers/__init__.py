"""Notifiers, one per destination kind, and the explicit registry that builds them."""

from __future__ import annotations

from collections.abc import Callable

from watcher.core.settings import (
    DEFAULT_SEND_TIMEOUT,
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
    "SEND_TIMEOUT",
    "Notifier",
    "SlackNotifier",
    "SlackWebhookNotifier",
    "WebhookNotifier",
    "build_notifier",
]


# Seconds one send may take (replicas: at most half the lease ttl).
SEND_TIMEOUT = DEFAULT_SEND_TIMEOUT.total_seconds()


def _slack(target: Target, timeout: float = SEND_TIMEOUT) -> Notifier:
    if not isinstance(target, SlackTarget):
        raise TypeError(f"expected SlackTarget, got {type(target).__name__}")
    return SlackNotifier(target, timeout=timeout)


def _slack_webhook(target: Target, timeout: float = SEND_TIMEOUT) -> Notifier:
    if not isinstance(target, SlackWebhookTarget):
        raise TypeError(f"expected SlackWebhookTarget, got {type(target).__name__}")
    return SlackWebhookNotifier(target, timeout=timeout)


def _webhook(target: Target, timeout: float = SEND_TIMEOUT) -> Notifier:
    if not isinstance(target, WebhookTarget):
        raise TypeError(f"expected WebhookTarget, got {type(target).__name__}")
    return WebhookNotifier(target, timeout=timeout)


NOTIFIER_FACTORIES: dict[TargetKind, Callable[[Target, float], Notifier]] = {
    TargetKind.SLACK: _slack,
    TargetKind.SLACK_WEBHOOK: _slack_webhook,
    TargetKind.WEBHOOK: _webhook,
}


def build_notifier(target: Target, *, timeout: float = SEND_TIMEOUT) -> Notifier:
    """Build the notifier for `target` from the registry (TypeError on a kind mismatch);
    one send through it takes at most `timeout` seconds."""
    return NOTIFIER_FACTORIES[target.kind](target, timeout)
