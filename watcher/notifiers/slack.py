"""Slack Web API notifier (bot token, `chat.postMessage` / `chat.update`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from watcher.core.message import FailureKind, Message, SendFailed, SendOutcome, Sent, SlackMessage
from watcher.core.retry_after import parse_retry_after
from watcher.core.settings import SlackTarget
from watcher.notifiers.base import (
    SdkSession,
    excerpt,
    is_http_url,
    sdk_options,
    transport_reason,
    wrong_message,
)

DEFAULT_API_URL = AsyncWebClient.BASE_URL

# Slack's own words for "try again later"; every other `ok: false` error is a fact about the
# request, token or channel that a retry cannot change.
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "missing_scope",
    }
)


def classify_slack_error(
    method: str,
    status: int,
    error: str | None,
    headers: Mapping[str, str],
    *,
    now: datetime,
    redact: tuple[str, ...] = (),
) -> SendFailed:
    """Classify a Slack Web API answer that was not `ok`.

    429 or `ratelimited` is retryable after the Retry-After wait; 5xx and Slack's
    transient error names are retryable; every other error name and 4xx is permanent.
    """
    shown = excerpt(error, redact=redact, limit=80) if error else None
    reason = (
        f"slack {method}: {shown} (HTTP {status})" if shown else f"slack {method}: HTTP {status}"
    )
    details: dict[str, Any] = {"status": status}
    if shown:
        details["error"] = shown
    if status == 429 or error == "ratelimited":
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        return SendFailed(FailureKind.RETRYABLE, reason, retry_after, details)
    if status >= 500 or error in RETRYABLE_ERRORS:
        return SendFailed(FailureKind.RETRYABLE, reason, details=details)
    if error is not None or 400 <= status < 500:
        return SendFailed(FailureKind.PERMANENT, reason, details=details)
    # A 200 without a readable body (or an odd status): Slack may have posted the message,
    # and at-least-once delivery prefers a duplicate to a loss.
    return SendFailed(
        FailureKind.RETRYABLE,
        f"slack {method}: unreadable response (HTTP {status})",
        details=details,
    )


def _api_error_outcome(
    method: str, exc: SlackApiError, *, now: datetime, redact: tuple[str, ...]
) -> SendFailed:
    # `exc.response` is an AsyncSlackResponse for a parsed answer, but the raw aiohttp
    # ClientResponse (status, no data) when the body was not JSON.
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    headers = getattr(response, "headers", None) or {}
    return classify_slack_error(
        method,
        status if isinstance(status, int) else 0,
        error if isinstance(error, str) else None,
        headers,
        now=now,
        redact=redact,
    )


class SlackNotifier:
    """Posts `SlackMessage`s to one channel with a bot token."""

    __slots__ = ("_channel", "_client", "_session", "_token", "_usable_url", "target_name")

    def __init__(self, target: SlackTarget, *, timeout: float = 10) -> None:
        self.target_name = target.name
        self._channel = target.channel
        self._token = target.token
        api_url = target.api_url or DEFAULT_API_URL
        self._client = AsyncWebClient(
            token=target.token.reveal(), base_url=api_url, **sdk_options(timeout)
        )
        self._session = SdkSession(self._client, api_url, timeout)
        self._usable_url = is_http_url(api_url)

    def __repr__(self) -> str:
        return f"SlackNotifier(target_name={self.target_name!r}, channel={self._channel!r})"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Post `message` to the target's channel; `Sent.handle` is the message `ts`."""
        if not isinstance(message, SlackMessage):
            raise wrong_message(self, SlackMessage, message)
        return await self._call(
            "chat.postMessage",
            self._client.chat_postMessage,
            now,
            channel=self._channel,
            text=message.text,
            blocks=[dict(block) for block in message.blocks] or None,
            unfurl_links=False,
            unfurl_media=False,
        )

    async def update(
        self, channel: str, ts: str, message: SlackMessage, *, now: datetime
    ) -> SendOutcome:
        """Replace the text and blocks of the message `ts` in `channel` (live cards)."""
        if not isinstance(message, SlackMessage):
            raise wrong_message(self, SlackMessage, message)
        return await self._call(
            "chat.update",
            self._client.chat_update,
            now,
            channel=channel,
            ts=ts,
            text=message.text,
            blocks=[dict(block) for block in message.blocks] or None,
        )

    async def aclose(self) -> None:
        """Close the HTTP session, if one was opened."""
        await self._session.aclose()

    async def _call(
        self,
        method: str,
        call: Callable[..., Awaitable[AsyncSlackResponse]],
        now: datetime,
        **kwargs: Any,
    ) -> SendOutcome:
        if not self._usable_url:
            return SendFailed(FailureKind.PERMANENT, f"slack {method}: invalid URL")
        self._session.ensure_open()
        redact = (self._token.reveal(),)
        try:
            response = await call(**kwargs)
        except SlackApiError as exc:
            return _api_error_outcome(method, exc, now=now, redact=redact)
        except aiohttp.InvalidURL:
            return SendFailed(FailureKind.PERMANENT, f"slack {method}: invalid URL")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendFailed(FailureKind.RETRYABLE, transport_reason(f"slack {method}", exc))
        except Exception as exc:
            # The SDK fails on malformed answers in assorted ways (AttributeError on a
            # text/plain 200, UnicodeDecodeError on undecodable JSON). The request may have
            # been posted, so this is a retryable delivery failure, not a worker crash.
            return SendFailed(
                FailureKind.RETRYABLE,
                f"slack {method}: unreadable response ({type(exc).__name__})",
            )
        ts = response.get("ts")
        return Sent(handle=ts if isinstance(ts, str) else None)
