"""The Factory API client: auth, parsing and failure classification."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import anyio
import httpx
import pytest

from tests.clock import ManualClock
from tests.core.factories import T0
from tests.rig import wait_for
from watcher.core.discovery import ListPage
from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, NotFound, Unchanged
from watcher.core.secret import Secret
from watcher.poll.api import (
    MAX_BODY_BYTES,
    FactoryClient,
    RequestBudget,
    body_digest,
    classify_list_response,
    classify_response,
    env_proxy,
)
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sim import FactorySimulator, RawBody

KEY = "fk-test-key-123"


@pytest.fixture
def sim() -> Iterator[FactorySimulator]:
    """A simulator with one running session."""
    with FactorySimulator(KEY) as server:
        server.add_session("s1", title="Nightly", status="running", message_count=2)
        yield server


@pytest.fixture
async def client(sim: FactorySimulator) -> AsyncIterator[FactoryClient]:
    """A client for the simulator with a short timeout."""
    api = FactoryClient(sim.url, Secret(KEY), timeout=0.5, concurrency=4)
    yield api
    await api.aclose()


@pytest.mark.anyio
async def test_fetch_reads_the_session(client: FactoryClient, sim: FactorySimulator) -> None:
    """A 200 becomes a snapshot; the request carried the bearer key."""
    result = await client.fetch_session("s1")
    assert isinstance(result, Fetched)
    assert (result.snapshot.session_id, result.snapshot.status) == ("s1", "running")
    assert result.snapshot.message_count == 2
    wait_for(lambda: sim.request_count("s1") == 1, what="the request to be logged")


@pytest.mark.anyio
async def test_unknown_and_deleted_sessions_are_not_found(
    client: FactoryClient, sim: FactorySimulator
) -> None:
    """404 is NotFound, for a session never seen and for a deleted one."""
    assert isinstance(await client.fetch_session("nope"), NotFound)
    sim.delete("s1")
    assert isinstance(await client.fetch_session("s1"), NotFound)


@pytest.mark.anyio
async def test_rejected_key_is_an_auth_failure(
    client: FactoryClient, sim: FactorySimulator
) -> None:
    """401 says plainly that the key was rejected, without quoting it."""
    sim.set_api_key("fk-rotated")
    result = await client.fetch_session("s1")
    assert isinstance(result, FetchFailed)
    assert result.kind is FetchFailureKind.AUTH
    assert "the API key was rejected" in result.reason
    assert KEY not in result.reason
    assert KEY not in repr(client)


FAULTS = [
    (Fault.HTTP_500, "HTTP 500", None),
    (Fault.HTTP_502_HTML, "HTTP 502: <html>", None),
    (Fault.HTTP_503, "HTTP 503", None),
    (Fault.HTTP_429, "HTTP 429", None),
    (Fault.HTTP_429_RETRY_AFTER, "HTTP 429", timedelta(seconds=7)),
    (Fault.TRUNCATED_JSON, "body is not JSON", None),
    (Fault.GARBAGE, "body is not JSON", None),
    (Fault.STALL, "", None),
    (Fault.RESET, "connection", None),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("fault", "reason", "retry_after"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_faults_are_retryable(
    client: FactoryClient,
    sim: FactorySimulator,
    fault: Fault,
    reason: str,
    retry_after: timedelta | None,
) -> None:
    """Every server or network fault is a retryable failure, never a snapshot."""
    # aiohttp resends an idempotent request once after a reset (RFC 9112 9.3.1),
    # so a reset must happen twice in a row to fail a poll.
    times = 2 if fault is Fault.RESET else 1
    sim.faults.add(
        FaultRule(fault, "/api/v0/sessions/s1", times=times, retry_after="7", stall_seconds=5)
    )
    result = await client.fetch_session("s1")
    assert isinstance(result, FetchFailed)
    assert result.kind is FetchFailureKind.RETRYABLE
    assert reason in result.reason
    assert result.retry_after == retry_after
    assert isinstance(await client.fetch_session("s1"), Fetched)  # the fault was one-off


@pytest.mark.anyio
async def test_one_reset_is_resent_once(client: FactoryClient, sim: FactorySimulator) -> None:
    """A single connection reset costs one resend of the GET, not a failed poll."""
    sim.faults.add(FaultRule(Fault.RESET, "/api/v0/sessions/s1"))
    assert isinstance(await client.fetch_session("s1"), Fetched)
    wait_for(lambda: sim.request_count("s1") == 2, what="the resent request to be logged")


@pytest.mark.anyio
async def test_connection_refused_is_retryable() -> None:
    """Nothing listening is a retryable failure."""
    with FactorySimulator(KEY) as gone:
        url = gone.url
    api = FactoryClient(url, Secret(KEY), timeout=0.5)
    try:
        result = await api.fetch_session("s1")
    finally:
        await api.aclose()
    assert isinstance(result, FetchFailed)
    assert result.kind is FetchFailureKind.RETRYABLE
    assert "connection failed" in result.reason


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "reason"),
    [
        (
            403,
            b'{"detail": "feature not enabled", "status": 403, "title": "Forbidden"}',
            {},
            FetchFailureKind.AUTH,
            "HTTP 403: the API key may not read sessions",
        ),
        (200, b'{"sessionId": 1}', {}, FetchFailureKind.RETRYABLE, "unreadable session"),
        (504, b"", {}, FetchFailureKind.RETRYABLE, "HTTP 504"),
        (418, b"[1]", {}, FetchFailureKind.RETRYABLE, "HTTP 418"),
        (
            429,
            b"",
            {"Retry-After": "Sat, 28 Nov 2026 12:01:00 GMT"},
            FetchFailureKind.RETRYABLE,
            "HTTP 429",
        ),
    ],
)
def test_classify_response(
    status: int, body: bytes, headers: dict[str, str], kind: FetchFailureKind, reason: str
) -> None:
    """Classification of responses the simulator does not produce."""
    result = classify_response(httpx.Response(status, content=body, headers=headers), T0)
    assert isinstance(result, FetchFailed)
    assert result.kind is kind
    assert result.reason.startswith(reason)
    if "Retry-After" in headers:
        assert result.retry_after == timedelta(seconds=60)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (RawBody(b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}"), "body larger than 1048576 bytes"),
        (RawBody(b'{"sessionId": "s1", "x": "' + b"y" * 65536, endless=True), "body larger"),
        (RawBody(b"[" * 300_000 + b"]" * 300_000), "body is nested too deeply"),
        (RawBody(b'{"sessionId": ' + b"9" * 5000 + b"}"), "body is not usable JSON"),
        (
            RawBody(
                b'{"sessionId": "s1", "status": "idle", "messageCount": NaN,'
                b' "createdAt": 1, "updatedAt": 2}'
            ),
            "unreadable session: messageCount is not a finite number",
        ),
        (
            RawBody(
                b'{"sessionId": "s1", "status": "idle", "messageCount": 1,'
                b' "createdAt": 1, "updatedAt": -166036958850935616}'
            ),
            "unreadable session: updatedAt out of range",
        ),
    ],
)
async def test_bodies_no_snapshot_can_come_from_are_failures(
    client: FactoryClient, sim: FactorySimulator, raw: RawBody, reason: str
) -> None:
    """Oversized, endless, deep, huge and out-of-range bodies are retryable failures."""
    sim.serve_raw("s1", raw)
    with anyio.fail_after(10):  # an endless body read whole would never end
        result = await client.fetch_session("s1")
    assert isinstance(result, FetchFailed)
    assert result.kind is FetchFailureKind.RETRYABLE
    assert result.reason.startswith(reason)
    sim.serve_raw("s1", None)
    assert isinstance(await client.fetch_session("s1"), Fetched)


@pytest.mark.anyio
async def test_an_oversized_error_body_still_classifies_by_status(
    client: FactoryClient, sim: FactorySimulator
) -> None:
    """A 401 whose body is too big to read is still an auth failure, just without an excerpt."""
    sim.serve_raw("s1", RawBody(b"x" * (MAX_BODY_BYTES + 10), status=401))
    result = await client.fetch_session("s1")
    assert isinstance(result, FetchFailed)
    assert result.kind is FetchFailureKind.AUTH
    assert result.reason == "HTTP 401: the API key was rejected"


def test_error_excerpts_are_one_encodable_line() -> None:
    """An error body's detail with newlines and lone surrogates becomes one safe line."""
    body = b'{"detail": "broken\\n  \\ud800 backend", "status": 503, "title": "x"}'
    result = classify_response(httpx.Response(503, content=body), T0)
    assert isinstance(result, FetchFailed)
    assert result.reason == "HTTP 503: broken \ufffd backend"


@pytest.mark.anyio
async def test_known_body_comes_back_unchanged(
    client: FactoryClient, sim: FactorySimulator
) -> None:
    """The same body as the known digest is Unchanged; any other body is read in full."""
    first = await client.fetch_session("s1")
    assert isinstance(first, Fetched)
    assert first.digest is not None
    again = await client.fetch_session("s1", known=first.digest)
    assert again == Unchanged(first.digest)
    assert isinstance(await client.fetch_session("s1", known=b"other"), Fetched)
    sim.complete_run("s1")
    changed = await client.fetch_session("s1", known=first.digest)
    assert isinstance(changed, Fetched)
    assert changed.digest not in (None, first.digest)
    assert changed.snapshot.status == "idle"


@pytest.mark.anyio
async def test_errors_are_never_unchanged(client: FactoryClient, sim: FactorySimulator) -> None:
    """Only a 200 can be Unchanged: an error body repeated is still a failure."""
    sim.faults.add(FaultRule(Fault.HTTP_503, "/api/v0/sessions/s1", times=2))
    first = await client.fetch_session("s1")
    assert isinstance(first, FetchFailed)
    assert isinstance(await client.fetch_session("s1", known=body_digest(b"")), FetchFailed)


def test_body_digest_tells_bodies_apart() -> None:
    """Equal bodies share a digest; a one-byte difference does not."""
    assert body_digest(b'{"a": 1}') == body_digest(b'{"a": 1}')
    assert body_digest(b'{"a": 1}') != body_digest(b'{"a": 2}')


@pytest.mark.anyio
async def test_proxy_from_the_environment_is_used(
    sim: FactorySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured, as httpx honoured it: the request goes to the proxy."""
    monkeypatch.setenv("HTTP_PROXY", sim.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    api = FactoryClient("http://factory.invalid", Secret(KEY), timeout=2)
    try:
        await api.fetch_session("s1")
    finally:
        await api.aclose()
    wait_for(lambda: sim.total_requests >= 1, what="the proxy (the simulator) to be asked")


@pytest.mark.parametrize(
    ("base", "env", "expected"),
    [
        ("https://api.factory.ai", {"HTTPS_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        ("https://api.factory.ai", {"HTTP_PROXY": "http://proxy:3128"}, None),
        (
            "https://api.factory.ai",
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "factory.ai"},
            None,
        ),
        ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://proxy:3128"}, "http://proxy:3128"),
        ("https://api.factory.ai", {}, None),
    ],
)
def test_env_proxy_follows_the_environment(
    base: str, env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy for the API is the one the environment names for its scheme and host."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    proxy = env_proxy(base)
    assert (None if proxy is None else str(proxy.url)) == expected


# --- the list endpoint and the request budget ---------------------------------


@pytest.mark.anyio
async def test_list_pages_follow_the_cursor(client: FactoryClient, sim: FactorySimulator) -> None:
    """Pages of 100 with the previous page's nextCursor; items read as full sessions."""
    sim.add_sessions(150)
    first = await client.list_sessions(None)
    assert isinstance(first, ListPage)
    assert len(first.sessions) == 100
    assert first.sessions[0].snapshot is not None
    assert first.next_cursor is not None
    second = await client.list_sessions(first.next_cursor)
    assert isinstance(second, ListPage)
    assert (len(second.sessions), second.next_cursor) == (51, None)


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        (Fault.HTTP_429_RETRY_AFTER, 429, timedelta(seconds=1)),
        (Fault.HTTP_503, 503, None),
        (Fault.GARBAGE, 200, None),
    ],
)
@pytest.mark.anyio
async def test_a_failed_list_is_classified_like_a_failed_poll(
    client: FactoryClient,
    sim: FactorySimulator,
    fault: Fault,
    status: int,
    retry_after: timedelta | None,
) -> None:
    """429 with Retry-After, 5xx and garbage are retryable failures, never an empty list."""
    sim.faults.add(FaultRule(fault, "/api/v0/sessions", exact=True))
    result = await client.list_sessions(None)
    assert isinstance(result, FetchFailed)
    assert (result.kind, result.status, result.retry_after) == (
        FetchFailureKind.RETRYABLE,
        status,
        retry_after,
    )
    assert isinstance(await client.fetch_session("s1"), Fetched)  # the session path is spared


@pytest.mark.anyio
async def test_a_list_without_sessions_is_a_failure() -> None:
    """A 200 that is not a page fails the pass instead of dropping every session."""
    response = httpx.Response(200, json={"items": []})
    result = classify_list_response(response, T0)
    assert isinstance(result, FetchFailed)
    assert "unreadable list" in result.reason


@pytest.mark.anyio
async def test_the_budget_spreads_callers_and_pauses_for_retry_after() -> None:
    """Callers get tokens at the rate, in turn; a 429 halves it and honours Retry-After."""
    clock = ManualClock(0.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    budget = RequestBudget(4.0, clock=clock, sleep=sleep)
    for _ in range(5):
        await budget.acquire()
    assert slept == pytest.approx([0.25] * 4)  # one saved token, then one every 1/4 s
    budget.throttled(timedelta(seconds=3))
    assert budget.bucket.rate == 2.0
    slept.clear()
    await budget.acquire()
    assert sum(slept) == pytest.approx(3.0)
    budget.set_rate(1.0)
    assert budget.bucket.rate == 1.0
