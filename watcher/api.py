"""The Factory Public API client: auth, timeouts, keep-alive, failure classification."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import quote

import anyio
import httpx

from watcher import USER_AGENT
from watcher.core.budget import TokenBucket, give_back, take, throttled, with_ceiling
from watcher.core.discovery import PAGE_LIMIT, ListPage, ListPageError, parse_list_page
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, FetchResult, NotFound
from watcher.core.retry_after import parse_retry_after
from watcher.core.secret import Secret
from watcher.core.snapshot import SnapshotError, parse_snapshot


class SessionSource(Protocol):
    """Where snapshots come from; `FactoryClient` over HTTP, fakes in unit tests."""

    async def fetch_session(self, session_id: str) -> FetchResult:
        """Read one session; never raises for network or server trouble."""
        ...

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """Read one page of the session list; never raises for network or server trouble."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _excerpt(response: httpx.Response) -> str:
    """A short, single-line description of an error body (the API's `detail` when JSON)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        text = " ".join(response.text.split())
        return text[:120]
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])[:200]
    return ""


def classify_response(response: httpx.Response, now: datetime) -> FetchResult:
    """Turn an HTTP response into a fetch result (pure given the response)."""
    status = response.status_code
    if status == 200:
        try:
            payload = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return FetchFailed(FetchFailureKind.RETRYABLE, "body is not JSON", status=status)
        try:
            return Fetched(parse_snapshot(payload))
        except SnapshotError as error:
            return FetchFailed(
                FetchFailureKind.RETRYABLE, f"unreadable session: {error}", status=status
            )
    if status == 404:
        return NotFound()
    detail = _excerpt(response)
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
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    return FetchFailed(FetchFailureKind.RETRYABLE, f"HTTP {status}{suffix}", retry_after, status)


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
        self._lock = anyio.Lock()

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
    """`SessionSource` over the real API with a pooled, keep-alive `httpx.AsyncClient`."""

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
        self._limit = anyio.CapacityLimiter(concurrency)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key.reveal()}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"FactoryClient(base_url={str(self._client.base_url)!r})"

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """`GET /api/v0/sessions?limit=100&cursor=`, classified like a session read."""
        params = {"limit": str(PAGE_LIMIT)}
        if cursor is not None:
            params["cursor"] = cursor
        async with self._limit:
            try:
                response = await self._client.get("/api/v0/sessions", params=params)
            except httpx.TimeoutException:
                return FetchFailed(FetchFailureKind.RETRYABLE, "list timed out")
            except httpx.TransportError as error:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, f"list connection failed: {type(error).__name__}"
                )
        return classify_list_response(response, self._clock())

    async def fetch_session(self, session_id: str) -> FetchResult:
        """`GET /api/v0/sessions/{id}`, classified; transport trouble is a retryable failure."""
        path = f"/api/v0/sessions/{quote(session_id, safe='')}"
        async with self._limit:
            try:
                response = await self._client.get(path)
            except httpx.TimeoutException:
                return FetchFailed(FetchFailureKind.RETRYABLE, "timed out")
            except httpx.RemoteProtocolError as error:
                return FetchFailed(FetchFailureKind.RETRYABLE, f"connection broke: {error}")
            except httpx.TransportError as error:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, f"connection failed: {type(error).__name__}"
                )
        return classify_response(response, self._clock())

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()
