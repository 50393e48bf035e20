"""The Factory Public API client: auth, timeouts, keep-alive, failure classification.

The transport is `httpx_aiohttp.AiohttpTransport`: the same httpx requests and
responses on aiohttp's connection pool, measured at a third to a quarter of
the CPU per request of httpx's own transport here (docs/performance.md). Polls,
the hot path, hand a prepared `httpx.Request` straight to that transport;
other calls may use the `httpx.AsyncClient` built over the same transport
and pool.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import aiohttp
import anyio
import httpx
from httpx_aiohttp import AiohttpTransport

from watcher import USER_AGENT
from watcher.core.budget import TokenBucket, give_back, take, throttled, with_ceiling
from watcher.core.discovery import PAGE_LIMIT, ListPage, ListPageError, parse_list_page
from watcher.core.poll import (
    Answer,
    Fetched,
    FetchFailed,
    FetchFailureKind,
    FetchResult,
    NotFound,
    Unchanged,
)
from watcher.core.retry_after import parse_retry_after
from watcher.core.secret import Secret
from watcher.core.snapshot import SnapshotError, parse_snapshot
from watcher.core.text import one_line

# A session body is a few kilobytes; anything past this is not one, and is
# never read into memory whole.
MAX_BODY_BYTES = 1024 * 1024


MESSAGES_PAGE = 50  # one page of assistant messages: the latest answer is among them


@runtime_checkable
class AnswerSource(Protocol):
    """A source that can also read a session's messages (for `include_last_answer`)."""

    async def fetch_messages(
        self, session_id: str, *, request_timeout: float
    ) -> list[Any] | FetchFailed:
        """The session's assistant messages (one page), or why not."""
        ...


class SessionSource(Protocol):
    """Where snapshots come from; `FactoryClient` over HTTP, fakes in unit tests."""

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Read one session; never raises for network or server trouble.

        `known` is the digest of the last body the caller fully processed for
        this session: a 200 with that same body may come back as `Unchanged`.
        """
        ...

    def forget(self, session_id: str) -> None:
        """Drop anything kept for a session that is no longer watched."""
        ...

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """Read one page of the session list; never raises for network or server trouble."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _excerpt(body: bytes) -> str:
    """A short, single-line description of an error body (the API's `detail` when JSON)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return one_line(body.decode("utf-8", "replace"), 120)
    if isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        return one_line(payload["detail"], 200)
    return ""


def describe_transport_error(error: httpx.TransportError) -> str:
    """Why a request got no answer, in words.

    httpx_aiohttp maps every aiohttp connection error to `httpx.ConnectTimeout`,
    so the aiohttp error it was raised from decides the words.
    """
    cause = error.__cause__
    if isinstance(cause, TimeoutError) or (
        cause is None and isinstance(error, httpx.TimeoutException)
    ):
        return "timed out"
    if isinstance(cause, aiohttp.ClientConnectorError):
        return f"connection failed: {type(cause).__name__}"
    if isinstance(cause, aiohttp.ClientError) or isinstance(error, httpx.RemoteProtocolError):
        return f"connection broke: {one_line(str(cause or error), 200)}"
    return f"connection failed: {type(error).__name__}"


def body_digest(body: bytes) -> bytes:
    """A fingerprint of a response body: equal digests mean byte-identical bodies."""
    return hashlib.blake2b(body, digest_size=16).digest()


class _BodyError(Exception):
    """A 200 body that is not a JSON document we can hold."""


def _decode_json(body: bytes) -> Any:
    """The JSON document in `body`; `_BodyError` says why there is none."""
    try:
        return json.loads(body)
    except RecursionError:
        raise _BodyError("body is nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _BodyError("body is not JSON") from None
    except ValueError as error:  # e.g. an integer longer than Python converts
        raise _BodyError(f"body is not usable JSON: {one_line(str(error), 120)}") from None


def classify_body(
    status: int, headers: Mapping[str, str], body: bytes, now: datetime
) -> FetchResult:
    """Turn an HTTP status, headers and body into a fetch result (pure; never raises)."""
    if status == 200:
        try:
            payload = _decode_json(body)
            return Fetched(parse_snapshot(payload), payload)
        except (_BodyError, SnapshotError) as error:
            reason = str(error) if isinstance(error, _BodyError) else f"unreadable session: {error}"
            return FetchFailed(FetchFailureKind.RETRYABLE, reason, status=status)
    if status == 404:
        return NotFound()
    detail = _excerpt(body)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        meaning = (
            "the API key was rejected"
            if status == 401
            else (
                "the API key may not read sessions (Manager/Owner key needed, "
                "or the sessions API is not enabled for this organization)"
            )
        )
        return FetchFailed(
            FetchFailureKind.AUTH, f"HTTP {status}: {meaning}{suffix}", status=status
        )
    retry_after = parse_retry_after(headers.get("Retry-After"), now)
    return FetchFailed(FetchFailureKind.RETRYABLE, f"HTTP {status}{suffix}", retry_after, status)


def classify_response(response: httpx.Response, now: datetime) -> FetchResult:
    """Turn a read HTTP response into a fetch result (pure given the response)."""
    return classify_body(response.status_code, response.headers, response.content, now)


async def read_capped(response: httpx.Response, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The (decoded) body of a streamed response, or None as soon as it exceeds `limit` bytes."""
    headers = response.headers
    declared = headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    if declared.isdigit() and headers.get("Content-Encoding", "identity") == "identity":
        # The framing bounds the body to what was declared: read it in one go,
        # which costs a fraction of decoding it chunk by chunk (the hot path).
        return await response.aread()
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


def env_proxy(base_url: str) -> httpx.Proxy | None:
    """The proxy the environment names for `base_url` (HTTP(S)_PROXY, NO_PROXY), if any.

    httpx honoured these by default; httpx_aiohttp's session does not. Read once:
    aiohttp's own `trust_env` looks them up, and parses ~/.netrc, on every request.
    """
    url = httpx.URL(base_url)
    if urllib.request.proxy_bypass(url.host):
        return None
    proxy = urllib.request.getproxies().get(url.scheme)
    return httpx.Proxy(proxy) if proxy else None


def classify_list_response(response: httpx.Response, now: datetime) -> ListPage | FetchFailed:
    """Turn a list answer into a page, or a failure classified like a session read."""
    if response.status_code != 200:
        result = classify_response(response, now)
        if isinstance(result, FetchFailed):
            return result
        return FetchFailed(
            FetchFailureKind.RETRYABLE, f"HTTP {response.status_code} from the list", None, 404
        )
    try:
        return parse_list_page(json.loads(response.content))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return FetchFailed(FetchFailureKind.RETRYABLE, "list body is not JSON", status=200)
    except ListPageError as error:
        return FetchFailed(FetchFailureKind.RETRYABLE, f"unreadable list: {error}", status=200)


class RequestBudget:
    """The shared request budget: every API call takes a token first (`core.budget`).

    Callers queue in turn, so a crowd of due requests is spread at the current
    rate. A 429 lowers the rate and honours `Retry-After`; the rate climbs back.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._bucket = TokenBucket.full(rate, clock())
        # fast_acquire: an uncontended token costs no event-loop turn (one per poll).
        self._lock = anyio.Lock(fast_acquire=True)

    @property
    def bucket(self) -> TokenBucket:
        """The bucket as of its last change (for status lines and tests)."""
        return self._bucket

    async def acquire(self) -> None:
        """Wait for a token, in turn with every other caller."""
        async with self._lock:
            while True:
                grant = take(self._bucket, self._clock())
                self._bucket = grant.bucket
                if grant.wait <= 0:
                    return
                await self._sleep(grant.wait)

    def refund(self) -> None:
        """Give back a token that was not used."""
        self._bucket = give_back(self._bucket)

    def throttled(self, retry_after: timedelta | None) -> None:
        """The API answered 429: slow down (and pause for `retry_after`)."""
        wait = None if retry_after is None else retry_after.total_seconds()
        self._bucket = throttled(self._bucket, self._clock(), wait)

    def set_rate(self, rate: float) -> None:
        """A reload changed the configured rate."""
        self._bucket = with_ceiling(self._bucket, rate, self._clock())


class FactoryClient:
    """`SessionSource` over the real API: keep-alive connections on aiohttp's pool."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        timeout: float = 10.0,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._clock = clock
        # fast_acquire: a free slot is taken without yielding to the loop first,
        # which saves an event-loop turn per poll.
        self._limit = anyio.Semaphore(concurrency, fast_acquire=True)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._transport = transport or AiohttpTransport(limits=limits, proxy=env_proxy(base_url))
        self._base = base_url.rstrip("/")
        self._headers = httpx.Headers(
            {
                "Authorization": f"Bearer {api_key.reveal()}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
        )
        self._timeout = httpx.Timeout(timeout).as_dict()
        # Built once per session and sent again on every poll (the transport only
        # reads it): URL parsing and header normalising are a measurable part of
        # a request. About 1 KB per watched session.
        self._requests: dict[str, httpx.Request] = {}
        self._client = httpx.AsyncClient(
            base_url=self._base,
            headers=self._headers,
            timeout=httpx.Timeout(timeout),
            limits=limits,
            follow_redirects=False,
            transport=self._transport,
        )

    def __repr__(self) -> str:
        return f"FactoryClient(base_url={self._base!r})"

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """`GET /api/v0/sessions?limit=100&cursor=`, classified like a session read."""
        params = {"limit": str(PAGE_LIMIT)}
        if cursor is not None:
            params["cursor"] = cursor
        async with self._limit:
            try:
                response = await self._client.get("/api/v0/sessions", params=params)
            except httpx.TransportError as error:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, f"list: {describe_transport_error(error)}"
                )
        return classify_list_response(response, self._clock())

    def _session_request(self, session_id: str) -> httpx.Request:
        request = self._requests.get(session_id)
        if request is None:
            url = f"{self._base}/api/v0/sessions/{quote(session_id, safe='')}"
            request = httpx.Request(
                "GET", url, headers=self._headers, extensions={"timeout": self._timeout}
            )
            self._requests[session_id] = request
        return request

    def forget(self, session_id: str) -> None:
        """Drop what is cached for a session no longer watched."""
        self._requests.pop(session_id, None)

    async def _get(self, request: httpx.Request) -> tuple[httpx.Response, bytes | None]:
        """One GET on the transport: the response and its whole body.

        The client's cookie, auth and redirect layers are skipped on purpose:
        the API needs none of them (redirects are not followed anyway), and
        they cost about as much CPU as the rest of the request.
        """
        response = await self._transport.handle_async_request(request)
        try:
            body = await read_capped(response)
        finally:
            await response.aclose()
        return response, body

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """`GET /api/v0/sessions/{id}`, classified; transport trouble is a retryable failure.

        A 200 whose body has the digest `known` is `Unchanged`, without parsing.
        """
        request = self._session_request(session_id)
        async with self._limit:
            try:
                response, body = await self._get(request)
            except httpx.TransportError as error:
                return FetchFailed(FetchFailureKind.RETRYABLE, describe_transport_error(error))
            except httpx.DecodingError:
                return FetchFailed(FetchFailureKind.RETRYABLE, "body could not be decoded")
        status, headers = response.status_code, response.headers
        if body is None and status == 200:
            return FetchFailed(
                FetchFailureKind.RETRYABLE,
                f"body larger than {MAX_BODY_BYTES} bytes",
                status=status,
            )
        if status != 200:
            # An error status classifies without its oversized body, just without an excerpt.
            return classify_body(status, headers, body or b"", self._clock())
        assert body is not None
        digest = body_digest(body)
        if digest == known:
            return Unchanged(digest)
        result = classify_body(status, headers, body, self._clock())
        return replace(result, digest=digest) if isinstance(result, Fetched) else result

    async def fetch_messages(
        self, session_id: str, *, request_timeout: float
    ) -> list[Any] | FetchFailed:
        """`GET /api/v0/sessions/{id}/messages?role=assistant`: the `messages` list, or why not.

        `request_timeout` bounds each phase of the request: a notification waits for this at most.
        """
        url = f"{self._base}/api/v0/sessions/{quote(session_id, safe='')}/messages"
        request = httpx.Request(
            "GET",
            url,
            params={"role": "assistant", "limit": str(MESSAGES_PAGE)},
            headers=self._headers,
            extensions={"timeout": httpx.Timeout(request_timeout).as_dict()},
        )
        async with self._limit:
            try:
                response, body = await self._get(request)
            except httpx.TransportError as error:
                reason = f"messages: {describe_transport_error(error)}"
                return FetchFailed(FetchFailureKind.RETRYABLE, reason)
            except httpx.DecodingError:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, "messages: body could not be decoded"
                )
        status = response.status_code
        if status != 200 or body is None:
            result = classify_body(status, response.headers, body or b"", self._clock())
            if isinstance(result, FetchFailed):
                return replace(result, reason=f"messages: {result.reason}")
            return FetchFailed(
                FetchFailureKind.RETRYABLE, f"messages: HTTP {status}", status=status
            )
        try:
            payload = _decode_json(body)
        except _BodyError as error:
            return FetchFailed(FetchFailureKind.RETRYABLE, f"messages: {error}", status=status)
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list):
            return FetchFailed(
                FetchFailureKind.RETRYABLE, "messages: expected {messages: [...]}", status=status
            )
        return messages

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()
