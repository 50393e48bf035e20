"""Slack Web API notifier (bot token, `chat.postMessage` / `chat.update`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
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

# The metadata type of our cards, so a card posted before a crash can be found again.
CARD_EVENT_TYPE = "factory_watcher_card"
FIND_PAGES = 5
FIND_PAGE_SIZE = 200
# Errors after which a card can never be updated again: post a new one that links it.
CARD_GONE_ERRORS = frozenset(
    {
        "message_not_found",
        "cant_update_message",
        "msg_too_long",
        "edit_window_closed",
        "update_not_allowed",
        "thread_locked",
    }
)


def _mark_card_gone(outcome: SendOutcome) -> SendOutcome:
    """Flag (`details["card_gone"]`) a refused `chat.update` that no retry can fix: the
    message is deleted, too old or too long to edit, so the card must be replaced.
    """
    if isinstance(outcome, SendFailed) and outcome.details.get("error") in CARD_GONE_ERRORS:
        return replace(outcome, details={**outcome.details, "card_gone": True})
    return outcome


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
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
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


def slack_client(target: SlackTarget, timeout: float) -> tuple[AsyncWebClient, SdkSession]:
    """A Web API client with the target's token and `api_url` (else Slack's), and its session."""
    api_url = target.api_url or DEFAULT_API_URL
    client = AsyncWebClient(token=target.token.reveal(), base_url=api_url, **sdk_options(timeout))
    return client, SdkSession(client, api_url, timeout)


class SlackNotifier:
    """Posts `SlackMessage`s to one channel with a bot token."""

    __slots__ = ("_channel", "_client", "_session", "_token", "_usable_url", "target_name")

    def __init__(self, target: SlackTarget, *, timeout: float = 10) -> None:
        self.target_name = target.name
        self._channel = target.channel
        self._token = target.token
        self._client, self._session = slack_client(target, timeout)
        self._usable_url = is_http_url(target.api_url or DEFAULT_API_URL)

    def __repr__(self) -> str:
        return f"SlackNotifier(target_name={self.target_name!r}, channel={self._channel!r})"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Post `message` to the target's channel; `Sent.handle` is the message `ts`."""
        if not isinstance(message, SlackMessage):
            raise wrong_message(self, SlackMessage, message)
        return await self.post(message, now=now)

    @property
    def channel(self) -> str:
        """The channel this notifier posts to (where its cards live)."""
        return self._channel

    async def post(
        self,
        message: SlackMessage,
        *,
        now: datetime,
        thread_ts: str | None = None,
        marker: str | None = None,
    ) -> SendOutcome:
        """Post `message` (into the thread of `thread_ts` if given); `Sent.handle` is its `ts`.

        `marker` goes into the message's metadata, so `find_card` can find the
        message again when we never learnt its `ts` (a crash right after posting).
        """
        metadata = None
        if marker is not None:
            metadata = {"event_type": CARD_EVENT_TYPE, "event_payload": {"card": marker}}
        return await self._call(
            "chat.postMessage",
            self._client.chat_postMessage,
            now,
            channel=self._channel,
            text=message.text,
            blocks=[dict(block) for block in message.blocks] or None,
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=False,
            unfurl_media=False,
        )

    async def find_card(
        self, marker: str, oldest: datetime, *, now: datetime
    ) -> str | SendFailed | None:
        """The `ts` of the message posted with `marker` since `oldest`, None if there is none.

        Reads the channel's history with metadata (`conversations.history`, which
        needs the `channels:history` scope), newest first, a few pages at most.
        """
        cursor: str | None = None
        for _ in range(FIND_PAGES):
            answer = await self._request(
                "conversations.history",
                self._client.conversations_history,
                now,
                channel=self._channel,
                oldest=f"{oldest.timestamp():.6f}",
                include_all_metadata=True,
                limit=FIND_PAGE_SIZE,
                cursor=cursor,
            )
            if isinstance(answer, SendFailed):
                return answer
            messages = answer.get("messages")
            for found in messages if isinstance(messages, list) else []:
                ts = _marked_ts(found, marker)
                if ts is not None:
                    return ts
            meta = answer.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not cursor or not answer.get("has_more"):
                return None
        return None

    async def permalink(self, ts: str, *, now: datetime) -> str | None:
        """A link to message `ts` in the channel, or None when Slack gives none."""
        answer = await self._request(
            "chat.getPermalink",
            self._client.chat_getPermalink,
            now,
            channel=self._channel,
            message_ts=ts,
        )
        if isinstance(answer, SendFailed):
            return None
        link = answer.get("permalink")
        return link if isinstance(link, str) and is_http_url(link) else None

    async def update(
        self, channel: str, ts: str, message: SlackMessage, *, now: datetime
    ) -> SendOutcome:
        """Replace the text and blocks of the message `ts` in `channel` (live cards)."""
        if not isinstance(message, SlackMessage):
            raise wrong_message(self, SlackMessage, message)
        outcome = await self._call(
            "chat.update",
            self._client.chat_update,
            now,
            channel=channel,
            ts=ts,
            text=message.text,
            blocks=[dict(block) for block in message.blocks] or None,
        )
        return _mark_card_gone(outcome)

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
        answer = await self._request(method, call, now, **kwargs)
        if isinstance(answer, SendFailed):
            return answer
        ts = answer.get("ts")
        return Sent(handle=ts if isinstance(ts, str) else None)

    async def _request(
        self,
        method: str,
        call: Callable[..., Awaitable[AsyncSlackResponse]],
        now: datetime,
        **kwargs: Any,
    ) -> Mapping[str, Any] | SendFailed:
        """One Web API call: its answer's data, or the classified failure."""
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
        data = response.data
        return data if isinstance(data, dict) else {}


def _marked_ts(message: Any, marker: str) -> str | None:
    """The `ts` of a history message whose metadata carries our card `marker`."""
    if not isinstance(message, dict):
        return None
    metadata = message.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("event_type") != CARD_EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    ts = message.get("ts")
    if isinstance(payload, dict) and payload.get("card") == marker and isinstance(ts, str):
        return ts
    return None
