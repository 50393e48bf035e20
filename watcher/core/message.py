"""Rendered messages (what a notifier sends) and send outcomes (what it reports back)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A Slack message: Block Kit blocks plus the plain-text fallback Slack always wants."""

    text: str
    blocks: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    """A generic webhook delivery; `id` is the Standard Webhooks `webhook-id`, equal on retries."""

    id: str
    body: bytes
    occurred_at: datetime


Message = SlackMessage | WebhookMessage


class FailureKind(StrEnum):
    """How a failed send should be treated; only the delivery worker decides what follows."""

    RETRYABLE = "retryable"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Sent:
    """The destination accepted the message; `handle` is e.g. a Slack message `ts`."""

    handle: str | None = None


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The destination refused or could not be reached; `reason` never contains a secret."""

    kind: FailureKind
    reason: str
    retry_after: timedelta | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


SendOutcome = Sent | SendFailed
