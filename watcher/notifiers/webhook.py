"""Generic webhook notifier: a JSON POST, signed per Standard Webhooks when a secret is set."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from watcher import USER_AGENT
from watcher.core.message import FailureKind, Message, SendFailed, SendOutcome, Sent, WebhookMessage
from watcher.core.retry_after import parse_retry_after
from watcher.core.settings import WebhookTarget
from watcher.core.urls import is_loopback_url
from watcher.notifiers.base import excerpt, transport_reason, wrong_message
from watcher.notifiers.signing import secret_key, signature_headers

# Headers the notifier owns: a target's extra headers cannot replace or duplicate them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
# Enough of an error body to explain a refusal; the rest is never read.
ERROR_BODY_LIMIT = 4096
# An acceptance is read whole (to know it arrived) but kept only this far.
ACCEPTED_BODY_LIMIT = 65536


def classify_webhook_status(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime,
    redact: tuple[str, ...] = (),
) -> SendOutcome:
    """Classify a webhook answer by status.

    2xx sent; 3xx permanent (redirects are not followed: they could carry the signed
    payload elsewhere); 408, 429 and 5xx retryable; every other status permanent.
    """
    if 200 <= status < 300:
        return Sent()
    shown = excerpt(body, redact=redact)
    details: dict[str, Any] = {"status": status}
    if 300 <= status < 400:
        return SendFailed(
            FailureKind.PERMANENT, f"webhook: HTTP {status}: redirect not followed", details=details
        )
    reason = f"webhook: HTTP {status}" + (f": {shown}" if shown else "")
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now)
        return SendFailed(FailureKind.RETRYABLE, reason, retry_after, details)
    if status == 408 or status >= 500:
        return SendFailed(FailureKind.RETRYABLE, reason, details=details)
    return SendFailed(FailureKind.PERMANENT, reason, details=details)


def _checked_url(raw: str, *, allow_http: bool) -> httpx.URL | SendFailed:
    # Configuration checks this too; a notifier must not be talked into plaintext anyway.
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL:
        return SendFailed(FailureKind.PERMANENT, "webhook: invalid URL")
    if url.scheme == "http" and not allow_http and not is_loopback_url(raw):
        return SendFailed(FailureKind.PERMANENT, "webhook: plain http refused (allow_http off)")
    if url.scheme not in ("http", "https"):
        return SendFailed(FailureKind.PERMANENT, f"webhook: unsupported scheme {url.scheme!r}")
    return url


def verify_context(target: WebhookTarget) -> ssl.SSLContext | bool:
    """What to verify the target's TLS with: the default roots, or its `ca_file`'s."""
    # Verification is never optional; a ca_file only changes which roots are trusted.
    if target.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(target.ca_file))


class WebhookNotifier:
    """POSTs `WebhookMessage` bodies to one URL."""

    __slots__ = ("_allow_http", "_client", "_headers", "_redact", "_secret", "_url", "target_name")

    def __init__(
        self,
        target: WebhookTarget,
        *,
        timeout: float = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.target_name = target.name
        self._allow_http = target.allow_http
        self._url = target.url
        self._secret = target.secret
        if target.secret is not None:
            secret_key(target.secret.reveal())  # fail at start-up, not at the first event
        self._headers = httpx.Headers({"User-Agent": USER_AGENT})
        for name, value in target.headers.items():
            if name.lower() not in RESERVED_HEADERS:
                self._headers[name] = value
        self._headers["Content-Type"] = "application/json"
        # Extra headers often carry credentials; a server that echoes them must not leak them.
        self._redact = tuple(value for value in target.headers.values() if len(value) >= 4) + (
            (target.secret.reveal(),) if target.secret is not None else ()
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            verify=verify_context(target),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier(target_name={self.target_name!r})"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """POST `message.body` once; the status line alone decides success."""
        if not isinstance(message, WebhookMessage):
            raise wrong_message(self, WebhookMessage, message)
        url = _checked_url(self._url, allow_http=self._allow_http)
        if isinstance(url, SendFailed):
            return url
        headers = self._headers.copy()
        if self._secret is not None:
            headers.update(
                signature_headers(
                    self._secret.reveal(), message.id, int(now.timestamp()), message.body
                )
            )
        request = self._client.build_request("POST", url, content=message.body, headers=headers)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            return SendFailed(FailureKind.RETRYABLE, "webhook: timed out")
        except httpx.TransportError as exc:
            return SendFailed(FailureKind.RETRYABLE, transport_reason("webhook", exc))
        try:
            if 200 <= response.status_code < 300:
                return await self._accepted(response)
            body = await self._read_excerpt(response)
            return classify_webhook_status(
                response.status_code, body, response.headers, now=now, redact=self._redact
            )
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @staticmethod
    async def _accepted(response: httpx.Response) -> SendOutcome:
        # A 2xx counts only once the whole answer has arrived and is what it
        # claims to be. A reply that breaks off, or says JSON and is not, is a
        # broken exchange: sending again risks a duplicate, never a loss.
        status = response.status_code
        chunks = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                if len(chunks) < ACCEPTED_BODY_LIMIT:
                    chunks += chunk
        except httpx.TimeoutException:
            return SendFailed(
                FailureKind.RETRYABLE, f"webhook: HTTP {status}, then the body stalled"
            )
        except httpx.HTTPError as exc:
            return SendFailed(
                FailureKind.RETRYABLE, transport_reason(f"webhook: HTTP {status}", exc)
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        claims_json = media_type == "application/json" or media_type.endswith("+json")
        if claims_json and chunks and len(chunks) < ACCEPTED_BODY_LIMIT:
            try:
                json.loads(bytes(chunks))
            except ValueError:
                return SendFailed(
                    FailureKind.RETRYABLE, f"webhook: HTTP {status} with a malformed JSON body"
                )
        return Sent()

    @staticmethod
    async def _read_excerpt(response: httpx.Response) -> bytes:
        # The status already decided the outcome; a body that fails to arrive only
        # costs the excerpt.
        chunks = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                chunks += chunk
                if len(chunks) >= ERROR_BODY_LIMIT:
                    break
        except httpx.HTTPError:
            pass
        return bytes(chunks[:ERROR_BODY_LIMIT])
