"""The Factory Public API client: auth, timeouts, keep-alive, failure classification."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import anyio
import httpx

from watcher import USER_AGENT
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, FetchResult, NotFound
from watcher.core.retry_after import parse_retry_after
from watcher.core.secret import Secret
from watcher.core.snapshot import SnapshotError, parse_snapshot
from watcher.core.text import one_line

# A session body is a few kilobytes; anything past this is not one, and is
# never read into memory whole.
MAX_BODY_BYTES = 1024 * 1024


class SessionSource(Protocol):
    """Where snapshots come from; `FactoryClient` over HTTP, fakes in unit tests."""

    async def fetch_session(self, session_id: str) -> FetchResult:
        """Read one session; never raises for network or server trouble."""
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
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) > limit:
            return None
    return bytes(chunks)


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
                async with self._client.stream("GET", path) as response:
                    body = await read_capped(response)
                    status, headers = response.status_code, response.headers
            except httpx.TimeoutException:
                return FetchFailed(FetchFailureKind.RETRYABLE, "timed out")
            except httpx.RemoteProtocolError as error:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, f"connection broke: {one_line(str(error), 200)}"
                )
            except httpx.TransportError as error:
                return FetchFailed(
                    FetchFailureKind.RETRYABLE, f"connection failed: {type(error).__name__}"
                )
            except httpx.DecodingError:
                return FetchFailed(FetchFailureKind.RETRYABLE, "body could not be decoded")
        if body is None and status == 200:
            return FetchFailed(
                FetchFailureKind.RETRYABLE,
                f"body larger than {MAX_BODY_BYTES} bytes",
                status=status,
            )
        # An error status classifies without its oversized body, just without an excerpt.
        return classify_body(status, headers, body or b"", self._clock())

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()
