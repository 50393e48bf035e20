"""What every notifier is, and the helpers their failure reports share."""

from __future__ import annotations

import logging
import math
import ssl
import urllib.request
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from watcher import USER_AGENT
from watcher.core.message import Message, SendOutcome
from watcher.core.secret import MASK
from watcher.core.urls import is_loopback_url

EXCERPT_LIMIT = 200

# slack-sdk logs whole request URLs and bodies at DEBUG whenever its logger's own level is
# NOTSET (it tests `logger.level`, not the effective level). An incoming-webhook URL is a
# credential, so the SDK clients get a logger of their own that never goes below INFO.
SDK_LOGGER = logging.getLogger("watcher.notifiers.sdk")
SDK_LOGGER.setLevel(logging.INFO)


class Notifier(Protocol):
    """Sends one finished message to one destination and classifies the result.

    A notifier never retries, sleeps or loops: the delivery worker owns all of that.
    Given the wrong kind of `Message` it raises TypeError (a programming error).
    """

    target_name: str

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Deliver `message` once; `now` dates Retry-After and signatures."""
        ...

    async def aclose(self) -> None:
        """Release connections; the notifier is not used afterwards."""
        ...


def excerpt(data: bytes | str, *, redact: Iterable[str] = (), limit: int = EXCERPT_LIMIT) -> str:
    """Return a short, single-line, printable rendering of a response body for a reason.

    Every non-empty string in `redact` is replaced first, so a server that echoes a
    credential back cannot smuggle it into a log line.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for secret in redact:
        if secret:
            text = text.replace(secret, MASK)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def wrong_message(notifier: object, expected: type, message: object) -> TypeError:
    """The error for a message of the wrong kind (the delivery worker called the wrong renderer)."""
    return TypeError(
        f"{type(notifier).__name__} sends {expected.__name__}, got {type(message).__name__}"
    )


def transport_reason(prefix: str, exc: BaseException) -> str:
    """Describe a connection-level failure by type and OS/TLS error text, never by `str(exc)`.

    Exception texts of HTTP clients quote the URL, and some URLs are credentials.
    """
    if isinstance(exc, TimeoutError):
        return f"{prefix}: timed out"
    detail = type(exc).__name__
    cause: BaseException | None = exc
    for _ in range(5):  # the OS or TLS error is usually wrapped once or twice
        if cause is None:
            break
        if isinstance(cause, ssl.SSLError) and cause.reason:
            detail = f"{detail}: TLS {excerpt(str(cause.reason), limit=80)}"
            break
        strerror = getattr(cause, "strerror", None)
        if isinstance(strerror, str) and strerror:
            detail = f"{detail}: {excerpt(strerror, limit=80)}"
            break
        cause = cause.__cause__ or cause.__context__
    return f"{prefix}: connection failed ({detail})"


def is_http_url(url: str) -> bool:
    """True for an absolute http(s) URL with a host; anything else cannot be posted to."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def bypasses_proxy(url: str) -> bool:
    """True when requests to `url` must not go through an environment proxy.

    slack-sdk reads HTTPS_PROXY/HTTP_PROXY but ignores NO_PROXY, so loopback fakes
    (demo, tests) would be sent to a corporate proxy; this restores the usual rule.
    """
    if is_loopback_url(url):
        return True
    return bool(urllib.request.proxy_bypass(urlsplit(url).hostname or ""))


def sdk_options(timeout: float) -> dict[str, Any]:
    """Keyword arguments every slack-sdk client of ours takes."""
    return {
        "timeout": math.ceil(timeout),
        "logger": SDK_LOGGER,
        "user_agent_prefix": USER_AGENT,
        # The outbox owns retries: the SDK's own connection retry can double-post.
        "retry_handlers": [],
    }


class SdkSession:
    """The aiohttp session a slack-sdk async client sends through, opened lazily.

    An aiohttp session belongs to the running loop, which a constructor called
    from configuration code may not have; it is opened at the first send.
    """

    def __init__(self, client: Any, url: str, timeout: float) -> None:
        self._client = client
        self._timeout = timeout
        self._http: aiohttp.ClientSession | None = None
        if bypasses_proxy(url):
            client.proxy = None

    def ensure_open(self) -> None:
        """Give the client an open session."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
            self._client.session = self._http

    async def aclose(self) -> None:
        """Close the session, if one was opened."""
        if self._http is not None:
            await self._http.close()
            self._http = None
