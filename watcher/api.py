"""The Factory Public API client: auth, timeouts, keep-alive, failure classification."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote

import anyio
import httpx

from watcher import USER_AGENT
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, FetchResult, NotFound
from watcher.core.retry_after import parse_retry_after
from watcher.core.secret import Secret
from watcher.core.snapshot import SnapshotError, parse_snapshot


class SessionSource(Protocol):
    """Where snapshots come from; `FactoryClient` over HTTP, fakes in unit tests."""

    async def fetch_session(self, session_id: str) -> FetchResult:
        """Read one session; never raises for network or server trouble."""
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
            return Fetched(parse_snapshot(payload), payload)
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
