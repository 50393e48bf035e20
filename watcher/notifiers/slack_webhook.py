"""Slack incoming-webhook notifier; the webhook URL is the credential."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.webhook.async_client import AsyncWebhookClient

from watcher.core.message import FailureKind, Message, SendFailed, SendOutcome, Sent, SlackMessage
from watcher.core.retry_after import parse_retry_after
from watcher.core.settings import SlackWebhookTarget
from watcher.notifiers.base import (
    SdkSession,
    excerpt,
    is_http_url,
    sdk_options,
    transport_reason,
    wrong_message,
)

# The plain-text bodies Slack answers a refused webhook post with. They describe the hook,
# the channel or the payload, none of which changes by trying again.
PERMANENT_BODIES = frozenset(
    {
        "invalid_token",
        "no_service",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "invalid_payload",
        "no_text",
    }
)


def classify_slack_webhook(
    status: int,
    body: str,
    headers: Mapping[str, str],
    *,
    now: datetime,
    redact: tuple[str, ...] = (),
) -> SendOutcome:
    """Classify an incoming-webhook answer: 2xx sent, 429 and 5xx retryable, the rest permanent."""
    if 200 <= status < 300:
        return Sent()
    name = body.strip()
    shown = excerpt(name, redact=redact) if name else ""
    reason = f"slack webhook: HTTP {status}" + (f": {shown}" if shown else "")
    details: dict[str, Any] = {"status": status}
    if name in PERMANENT_BODIES:
        details["error"] = name
        return SendFailed(FailureKind.PERMANENT, reason, details=details)
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        return SendFailed(FailureKind.RETRYABLE, reason, retry_after, details)
    if status >= 500:
        return SendFailed(FailureKind.RETRYABLE, reason, details=details)
    return SendFailed(FailureKind.PERMANENT, reason, details=details)


def _url_secrets(url: str) -> tuple[str, ...]:
    # A server could echo the hook's path or its last segment (the actual token) back.
    path = urlsplit(url).path
    segments = tuple(part for part in path.split("/") if len(part) >= 8)
    return (url, path, *segments) if path not in ("", "/") else (url,)


class SlackWebhookNotifier:
    """Posts `SlackMessage`s to one Slack incoming webhook."""

    __slots__ = ("_client", "_redact", "_session", "_usable_url", "target_name")

    def __init__(self, target: SlackWebhookTarget, *, timeout: float = 10) -> None:
        self.target_name = target.name
        url = target.url.reveal()
        self._redact = _url_secrets(url)
        self._client = AsyncWebhookClient(url=url, **sdk_options(timeout))
        self._session = SdkSession(self._client, url, timeout)
        self._usable_url = is_http_url(url)

    def __repr__(self) -> str:
        return f"SlackWebhookNotifier(target_name={self.target_name!r})"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Post `message` (text fallback plus blocks) to the webhook once."""
        if not isinstance(message, SlackMessage):
            raise wrong_message(self, SlackMessage, message)
        if not self._usable_url:
            return SendFailed(FailureKind.PERMANENT, "slack webhook: invalid URL")
        self._session.ensure_open()
        try:
            response = await self._client.send(
                text=message.text,
                blocks=[dict(block) for block in message.blocks] or None,
                unfurl_links=False,
                unfurl_media=False,
            )
        except aiohttp.InvalidURL:
            return SendFailed(FailureKind.PERMANENT, "slack webhook: invalid URL")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendFailed(FailureKind.RETRYABLE, transport_reason("slack webhook", exc))
        except Exception as exc:
            # E.g. UnicodeDecodeError on an undecodable answer: the post may have landed,
            # and at-least-once delivery prefers a duplicate to a loss.
            return SendFailed(
                FailureKind.RETRYABLE,
                f"slack webhook: unreadable response ({type(exc).__name__})",
            )
        return classify_slack_webhook(
            response.status_code,
            response.body or "",
            response.headers or {},
            now=now,
            redact=self._redact,
        )

    async def aclose(self) -> None:
        """Close the HTTP session, if one was opened."""
        await self._session.aclose()
