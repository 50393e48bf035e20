"""The simulated Factory API: what it serves, how it is controlled, how it misbehaves."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.clock import ManualClock
from tests.rig import wait_for
from watcher.core.model import TokenUsage
from watcher.core.snapshot import parse_snapshot
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sim import (
    REQUEST_LOG_SIZE,
    Autopilot,
    AutopilotOdds,
    AutopilotStep,
    DuplicateSessionError,
    FactorySimulator,
    InvalidRequestError,
    Move,
    RawBody,
    SimSession,
    SimTag,
    UnknownSessionError,
    main,
)

KEY = "fk-test-key"
T0 = 1_700_000_000.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[FactorySimulator]:
    with FactorySimulator(KEY, clock=clock) as server:
        yield server


@pytest.fixture
def client(sim: FactorySimulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
        trust_env=False,
    ) as http:
        yield http


@pytest.fixture
def control(sim: FactorySimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5, trust_env=False) as http:
        yield http


# -- the API surface -------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer fk-wrong",
        "Bearer",
        f"bearer {KEY}",
        f"Bearer {KEY}-and-more",
        KEY,
        f"Basic {KEY}",
    ],
)
def test_anything_but_the_exact_bearer_key_gets_401(
    sim: FactorySimulator, control: httpx.Client, authorization: str | None
) -> None:
    """Only `Authorization: Bearer <api_key>` passes; the error body follows the schema."""
    sim.add_session("abc")
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/api/v0/sessions/abc", "/api/v0/sessions", "/api/v0/sessions/unknown"):
        response = control.get(path, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body == {"detail": body["detail"], "status": 401, "title": "Unauthorized"}
        assert KEY not in response.text


def test_set_api_key_rotates_the_accepted_key(sim: FactorySimulator, client: httpx.Client) -> None:
    """After a rotation the old key is refused and the new one accepted."""
    sim.add_session("abc")
    sim.set_api_key("fk-rotated")
    assert client.get("/api/v0/sessions/abc").status_code == 401
    rotated = {"Authorization": "Bearer fk-rotated"}
    assert client.get("/api/v0/sessions/abc", headers=rotated).status_code == 200


@pytest.mark.parametrize(
    ("prepare", "path"),
    [
        (lambda sim: None, "/api/v0/sessions/nope"),
        (lambda sim: (sim.add_session("gone"), sim.delete("gone")), "/api/v0/sessions/gone"),
        (lambda sim: None, "/api/v0/sessions/a/b"),
        (lambda sim: None, "/api/v0/other"),
    ],
    ids=["unknown", "deleted", "nested-path", "other-route"],
)
def test_unknown_and_deleted_sessions_answer_404(
    sim: FactorySimulator,
    client: httpx.Client,
    prepare: Callable[[FactorySimulator], object],
    path: str,
) -> None:
    """Unknown ids, soft-deleted sessions and unknown routes are 404 with an error body."""
    prepare(sim)
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"detail", "status", "title"}
    assert response.json()["status"] == 404


def test_other_methods_on_the_api_are_405(sim: FactorySimulator, client: httpx.Client) -> None:
    """The simulator serves reads only; writes to API paths are refused, not ignored."""
    sim.add_session("abc")
    response = client.post("/api/v0/sessions/abc", json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_a_full_session_body_matches_the_schema_exactly(
    sim: FactorySimulator, client: httpx.Client, clock: ManualClock
) -> None:
    """Every field the simulator can set is served under its documented name and type."""
    usage = TokenUsage(10, 20, 30, 40, 50, factory_credits=1.5)
    inclusive = TokenUsage(11, 21, 31, 41, 51)
    sim.add_session(
        "full",
        title="Refactor <everything>",
        status="running",
        message_count=4,
        computer_id="cmp-1",
        model="sim-model-1",
        token_usage=usage,
        inclusive_token_usage=inclusive,
        tags=["nightly", SimTag("team", {"name": "platform"})],
    )
    clock.now = T0 + 60
    sim.complete_run("full")
    clock.now = T0 + 120
    sim.archive("full")

    response = client.get("/api/v0/sessions/full", params={"computerId": "cmp-1"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body == {
        "sessionId": "full",
        "title": "Refactor <everything>",
        "status": "idle",
        "messageCount": 6,
        "createdAt": 1_700_000_000_000,
        "updatedAt": 1_700_000_120_000,
        "completedAt": 1_700_000_060_000,
        "computerId": "cmp-1",
        "sessionSettings": {
            "model": "sim-model-1",
            "tokenUsage": {
                "inputTokens": 3610,
                "outputTokens": 860,
                "cacheCreationTokens": 1230,
                "cacheReadTokens": 10440,
                "thinkingTokens": 350,
                "factoryCredits": 2.2,
            },
            "inclusiveTokenUsage": {
                "inputTokens": 3611,
                "outputTokens": 861,
                "cacheCreationTokens": 1231,
                "cacheReadTokens": 10441,
                "thinkingTokens": 351,
                "factoryCredits": 0.7,
            },
            "archivedAt": "2023-11-14T22:15:20.000Z",
            "tags": [{"name": "nightly"}, {"name": "team", "metadata": {"name": "platform"}}],
        },
    }
    assert body == sim.snapshot_json("full")
    snapshot = parse_snapshot(body)
    assert (snapshot.session_id, snapshot.status, snapshot.tags) == (
        "full",
        "idle",
        ("nightly", "team"),
    )


def test_unset_optional_fields_are_absent(sim: FactorySimulator, client: httpx.Client) -> None:
    """A bare session carries only the required fields, each with its documented JSON type."""
    sim.add_session("bare")
    body = client.get("/api/v0/sessions/bare").json()
    assert set(body) == {"sessionId", "status", "messageCount", "createdAt", "updatedAt"}
    assert [type(body[key]) for key in sorted(body)] == [int, int, str, str, int]
    assert parse_snapshot(body).message_count == 0


def test_unknown_statuses_are_served_as_given(sim: FactorySimulator, client: httpx.Client) -> None:
    """Tests can serve statuses the API may add later."""
    sim.add_session("odd", status="waiting_for_approval")
    assert client.get("/api/v0/sessions/odd").json()["status"] == "waiting_for_approval"


def test_updated_at_strictly_increases_within_one_millisecond(sim: FactorySimulator) -> None:
    """Every mutation moves updatedAt forward even when the clock does not move."""
    created = sim.add_session("abc")
    seen = [created.updated_at_ms]
    for mutate in (
        lambda: sim.update("abc", title="x"),
        lambda: sim.start_run("abc"),
        lambda: sim.add_messages("abc", 2),
        lambda: sim.complete_run("abc"),
        lambda: sim.update("abc"),
        lambda: sim.archive("abc"),
    ):
        seen.append(mutate().updated_at_ms)
    assert seen == sorted(set(seen))
    assert sim.session("abc").created_at_ms == created.created_at_ms


def test_updated_at_follows_the_clock_when_it_moves(
    sim: FactorySimulator, clock: ManualClock
) -> None:
    """updatedAt is the current time in ms when that is already ahead of the last value."""
    sim.add_session("abc")
    clock.now = T0 + 2.5
    assert sim.update("abc", status="running").updated_at_ms == 1_700_000_002_500


# -- lifecycle helpers -------------------------------------------------------------


def _fields(session: SimSession) -> dict[str, Any]:
    return {
        "status": session.status,
        "messages": session.message_count,
        "completed": session.completed_at_ms == session.updated_at_ms,
        "had_completed": session.completed_at_ms is not None,
        "archived": session.archived_at is not None,
        "input_tokens": None if session.token_usage is None else session.token_usage.input_tokens,
    }


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            lambda sim: sim.start_run("s"),
            {
                "status": "running",
                "messages": 2,
                "completed": False,
                "had_completed": False,
                "archived": False,
                "input_tokens": None,
            },
        ),
        (
            lambda sim: sim.add_messages("s", 3),
            {
                "status": "pending",
                "messages": 4,
                "completed": False,
                "had_completed": False,
                "archived": False,
                "input_tokens": 5400,
            },
        ),
        (
            lambda sim: (sim.start_run("s"), sim.complete_run("s"))[-1],
            {
                "status": "idle",
                "messages": 4,
                "completed": True,
                "had_completed": True,
                "archived": False,
                "input_tokens": 3600,
            },
        ),
        (
            lambda sim: (sim.start_run("s"), sim.interrupt("s"))[-1],
            {
                "status": "idle",
                "messages": 2,
                "completed": False,
                "had_completed": False,
                "archived": False,
                "input_tokens": None,
            },
        ),
        (
            lambda sim: sim.archive("s"),
            {
                "status": "pending",
                "messages": 1,
                "completed": False,
                "had_completed": False,
                "archived": True,
                "input_tokens": None,
            },
        ),
        (
            lambda sim: (sim.archive("s"), sim.update("s", archived=False))[-1],
            {
                "status": "pending",
                "messages": 1,
                "completed": False,
                "had_completed": False,
                "archived": False,
                "input_tokens": None,
            },
        ),
        (
            lambda sim: sim.update("s", status="idle", message_count=9, completed=True),
            {
                "status": "idle",
                "messages": 9,
                "completed": True,
                "had_completed": True,
                "archived": False,
                "input_tokens": None,
            },
        ),
    ],
    ids=["start", "messages", "complete", "interrupt", "archive", "unarchive", "update"],
)
def test_lifecycle_helpers(
    sim: FactorySimulator,
    action: Callable[[FactorySimulator], SimSession],
    expected: dict[str, Any],
) -> None:
    """Each helper changes exactly the fields a real session would."""
    sim.add_session("s", message_count=1)
    assert _fields(action(sim)) == expected


def test_a_second_run_moves_completed_at_and_archiving_twice_keeps_the_first_date(
    sim: FactorySimulator, clock: ManualClock
) -> None:
    """completedAt changes per run; archivedAt keeps the moment of the first archive."""
    sim.add_session("s", status="running")
    first = sim.complete_run("s").completed_at_ms
    sim.start_run("s")
    second = sim.complete_run("s").completed_at_ms
    assert first is not None
    assert second is not None
    assert second > first
    archived = sim.archive("s").archived_at
    clock.now += 3600
    assert sim.archive("s").archived_at == archived


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda sim: sim.add_session("s"), DuplicateSessionError),
        (lambda sim: (sim.delete("s"), sim.add_session("s")), DuplicateSessionError),
        (lambda sim: sim.update("missing", title="x"), UnknownSessionError),
        (lambda sim: (sim.delete("s"), sim.complete_run("s")), UnknownSessionError),
        (lambda sim: (sim.delete("s"), sim.snapshot_json("s")), UnknownSessionError),
        (lambda sim: sim.session("missing"), UnknownSessionError),
        (lambda sim: sim.update("s", message_count=-1), InvalidRequestError),
        (lambda sim: sim.update("s", status=""), InvalidRequestError),
        (lambda sim: sim.update("s", tags=[""]), InvalidRequestError),
        (lambda sim: sim.add_session("a/b"), InvalidRequestError),
    ],
    ids=[
        "duplicate",
        "deleted-id-stays-taken",
        "update-unknown",
        "complete-deleted",
        "snapshot-deleted",
        "session-unknown",
        "negative-count",
        "empty-status",
        "empty-tag",
        "slash-in-id",
    ],
)
def test_control_errors(
    sim: FactorySimulator, call: Callable[[FactorySimulator], object], error: type[Exception]
) -> None:
    """Impossible control calls raise a named error instead of serving nonsense."""
    sim.add_session("s")
    with pytest.raises(error):
        call(sim)


# -- the list endpoint -------------------------------------------------------------


def test_list_pages_through_live_sessions_in_creation_order(
    sim: FactorySimulator, client: httpx.Client
) -> None:
    """Pages follow nextCursor until hasMore is false, skipping deleted sessions."""
    ids = sim.add_sessions(7)
    sim.delete(ids[3])
    sim.delete(ids[-1])
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        body = client.get("/api/v0/sessions", params=params).json()
        pages.append([s["sessionId"] for s in body["sessions"]])
        if not body["pagination"]["hasMore"]:
            assert body["pagination"]["nextCursor"] is None
            break
        params = {"limit": 2, "cursor": body["pagination"]["nextCursor"]}
    assert pages == [[ids[0], ids[1]], [ids[2], ids[4]], [ids[5]]]


def test_list_bodies_are_session_bodies_and_the_default_limit_is_20(
    sim: FactorySimulator, client: httpx.Client
) -> None:
    """Without a limit a page holds 20 sessions, each as GET would serve it."""
    ids = sim.add_sessions(25)
    body = client.get("/api/v0/sessions").json()
    assert len(body["sessions"]) == 20
    assert body["sessions"][0] == sim.snapshot_json(ids[0])
    assert body["pagination"]["hasMore"] is True


def test_list_can_carry_only_session_ids(
    sim: FactorySimulator, client: httpx.Client, control: httpx.Client
) -> None:
    """In the bare mode (set from Python or over HTTP) items carry only sessionId."""
    ids = sim.add_sessions(3)
    assert control.put("/_sim/list-mode", json={"ids_only": True}).status_code == 204
    body = client.get("/api/v0/sessions").json()
    assert body["sessions"] == [{"sessionId": i} for i in ids]
    assert control.put("/_sim/list-mode", json={"ids_only": "yes"}).status_code == 400
    sim.set_list_ids_only(False)
    assert client.get("/api/v0/sessions").json()["sessions"][0] == sim.snapshot_json(ids[0])


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "bogus!"}, {"cursor": "YQ"}],
)
def test_list_rejects_bad_limits_and_cursors(
    sim: FactorySimulator, client: httpx.Client, params: dict[str, str]
) -> None:
    """Out-of-range limits and cursors it did not issue are 400 with an error body."""
    response = client.get("/api/v0/sessions", params=params)
    assert response.status_code == 400
    assert response.json()["status"] == 400


# -- HTTP control routes -----------------------------------------------------------


def test_http_control_routes_drive_the_same_state(
    sim: FactorySimulator, client: httpx.Client, control: httpx.Client
) -> None:
    """Create, patch, run, archive and delete over HTTP, as a subprocess test would."""
    created = control.post(
        "/_sim/sessions",
        json={
            "session_id": "h1",
            "title": "over http",
            "status": "running",
            "token_usage": {
                "inputTokens": 1,
                "outputTokens": 2,
                "cacheCreationTokens": 3,
                "cacheReadTokens": 4,
                "thinkingTokens": 5,
            },
            "tags": ["a", {"name": "b", "metadata": {"k": "v"}}],
        },
    )
    assert created.status_code == 201
    assert created.json() == client.get("/api/v0/sessions/h1").json()
    assert control.post("/_sim/sessions", json={"session_id": "h1"}).status_code == 409

    patched = control.patch("/_sim/sessions/h1", json={"message_count": 5, "model": "m"})
    assert patched.status_code == 200
    assert (patched.json()["messageCount"], patched.json()["sessionSettings"]["model"]) == (5, "m")

    for action, status in [("complete", "idle"), ("start", "running"), ("interrupt", "idle")]:
        assert control.post(f"/_sim/sessions/h1/{action}").json()["status"] == status
    archived = control.post("/_sim/sessions/h1/archive").json()
    assert "archivedAt" in archived["sessionSettings"]

    assert control.delete("/_sim/sessions/h1").status_code == 204
    assert client.get("/api/v0/sessions/h1").status_code == 404
    assert control.post("/_sim/sessions/h1/complete").status_code == 404
    assert sim.session("h1").deleted


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/_sim/sessions", {"title": "no id"}, 400),
        ("POST", "/_sim/sessions", {"session_id": "x", "colour": "red"}, 400),
        ("POST", "/_sim/sessions", {"session_id": "x", "message_count": "3"}, 400),
        ("POST", "/_sim/sessions", {"session_id": "x", "token_usage": {"inputTokens": 1}}, 400),
        ("POST", "/_sim/sessions", ["not", "an", "object"], 400),
        ("PATCH", "/_sim/sessions/missing", {"title": "x"}, 404),
        ("PATCH", "/_sim/sessions/s", {"completed": "yes"}, 400),
        ("POST", "/_sim/faults", {"fault": "meteor"}, 400),
        ("POST", "/_sim/faults", {"fault": "http_500", "times": 0}, 400),
        ("PUT", "/_sim/api-key", {"key": "x"}, 400),
        ("GET", "/_sim/nothing", None, 404),
        ("PUT", "/_sim/sessions/s/raw", {"status": 200}, 400),
        ("PUT", "/_sim/sessions/s/raw", {"body": "x", "status": 42}, 400),
        ("PUT", "/_sim/sessions/s/raw", {"body": "x", "endless": "yes"}, 400),
        ("PUT", "/_sim/sessions/s/raw", {"body": "x", "colour": "red"}, 400),
        ("POST", "/_sim/sessions/s/explode", None, 404),
    ],
)
def test_http_control_routes_reject_bad_requests(
    sim: FactorySimulator,
    control: httpx.Client,
    *,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    """Bad control requests get a 4xx error body and change nothing."""
    sim.add_session("s")
    before = sim.sessions(include_deleted=True)
    response = control.request(method, path, json=body)
    assert response.status_code == status
    assert response.json()["status"] == status
    assert sim.sessions(include_deleted=True) == before


def test_http_control_rejects_a_body_that_is_not_json(control: httpx.Client) -> None:
    """A malformed control body is a 400, not a crash."""
    response = control.post("/_sim/sessions", content=b"{nope")
    assert response.status_code == 400


def test_http_faults_stats_requests_and_api_key(
    sim: FactorySimulator, client: httpx.Client, control: httpx.Client
) -> None:
    """Faults, the API key and the counters are reachable over HTTP too."""
    sim.add_sessions(2)
    added = control.post(
        "/_sim/faults",
        json={
            "fault": "http_429_retry_after",
            "path_prefix": "/api/v0/sessions/sim-0001",
            "times": 2,
            "retry_after": "3",
        },
    )
    assert added.status_code == 201
    statuses = [client.get("/api/v0/sessions/sim-0001").status_code for _ in range(3)]
    assert statuses == [429, 429, 200]

    control.post("/_sim/faults", json={"fault": "http_500", "times": -1})
    assert client.get("/api/v0/sessions/sim-0002").status_code == 500
    assert control.delete("/_sim/faults").status_code == 204
    assert client.get("/api/v0/sessions/sim-0002").status_code == 200

    stats = control.get("/_sim/stats").json()
    assert stats == {
        "total_requests": 5,
        "sessions": 2,
        "deleted": 0,
        "archived": 0,
        "statuses": {"pending": 2},
        "faults_applied": 3,
    }
    log = control.get("/_sim/requests", params={"path": "/api/v0/sessions/sim-0001"}).json()
    assert log["count"] == 3
    assert [r["status"] for r in log["requests"]] == [429, 429, 200]

    assert control.put("/_sim/api-key", json={"api_key": "fk-new"}).status_code == 204
    assert client.get("/api/v0/sessions/sim-0001").status_code == 401


# -- faults ---------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    return response.json()


@pytest.mark.parametrize(
    ("rule", "check"),
    [
        (FaultRule(Fault.HTTP_500), lambda r: r.status_code == 500 and _json(r)["status"] == 500),
        (
            FaultRule(Fault.HTTP_502_HTML),
            lambda r: (
                r.status_code == 502
                and r.headers["Content-Type"] == "text/html"
                and r.text.startswith("<html>")
            ),
        ),
        (FaultRule(Fault.HTTP_503), lambda r: r.status_code == 503 and _json(r)["status"] == 503),
        (
            FaultRule(Fault.HTTP_429),
            lambda r: r.status_code == 429 and "Retry-After" not in r.headers,
        ),
        (
            FaultRule(Fault.HTTP_429_RETRY_AFTER, retry_after="17"),
            lambda r: r.status_code == 429 and r.headers["Retry-After"] == "17",
        ),
        (
            FaultRule(Fault.HTTP_429_RETRY_AFTER, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"),
            lambda r: r.headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT",
        ),
    ],
    ids=["500", "502-html", "503", "429", "429-retry-after-seconds", "429-retry-after-date"],
)
def test_http_error_faults_are_observable(
    sim: FactorySimulator,
    client: httpx.Client,
    rule: FaultRule,
    check: Callable[[httpx.Response], bool],
) -> None:
    """Each error fault answers the next request its own way, then the session is back."""
    sim.add_session("abc")
    sim.faults.add(FaultRule(rule.fault, "/api/v0/sessions/abc", 1, rule.retry_after))
    assert check(client.get("/api/v0/sessions/abc"))
    assert client.get("/api/v0/sessions/abc").status_code == 200


@pytest.mark.parametrize("fault", [Fault.TRUNCATED_JSON, Fault.GARBAGE])
def test_unparseable_200_faults_are_observable(
    sim: FactorySimulator, client: httpx.Client, fault: Fault
) -> None:
    """Truncated JSON and garbage arrive as 200s whose bodies do not parse."""
    sim.add_session("abc")
    sim.faults.add(FaultRule(fault, "/api/v0/sessions/abc"))
    response = client.get("/api/v0/sessions/abc")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.content)


def test_stall_fault_times_the_client_out(sim: FactorySimulator) -> None:
    """A stalled response ends in a client read timeout, not a hang."""
    sim.add_session("abc")
    sim.faults.add(FaultRule(Fault.STALL, "/api/v0/sessions/abc", stall_seconds=10))
    with (
        httpx.Client(base_url=sim.url, trust_env=False, timeout=0.3) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.get("/api/v0/sessions/abc", headers={"Authorization": f"Bearer {KEY}"})


def test_reset_fault_is_a_transport_error(sim: FactorySimulator, client: httpx.Client) -> None:
    """A reset connection surfaces as an httpx transport error, and is logged with status 0."""
    sim.add_session("abc")
    sim.faults.add(FaultRule(Fault.RESET, "/api/v0/sessions/abc"))
    with pytest.raises(httpx.TransportError):
        client.get("/api/v0/sessions/abc")
    assert client.get("/api/v0/sessions/abc").status_code == 200
    assert [r.status for r in sim.session_requests("abc")] == [0, 200]


def test_a_fault_prefix_only_hits_its_session(sim: FactorySimulator, client: httpx.Client) -> None:
    """`/api/v0/sessions/abc` faults that session's path and leaves others alone."""
    sim.add_session("abc")
    sim.add_session("xyz")
    sim.faults.add(FaultRule(Fault.HTTP_503, "/api/v0/sessions/abc", times=-1))
    assert client.get("/api/v0/sessions/xyz").status_code == 200
    assert client.get("/api/v0/sessions/abc").status_code == 503
    assert client.get("/api/v0/sessions/abc").status_code == 503


def test_control_routes_are_exempt_from_faults(
    sim: FactorySimulator, control: httpx.Client
) -> None:
    """A catch-all fault cannot block the request that clears it."""
    sim.faults.add(FaultRule(Fault.RESET, times=-1))
    assert control.get("/_sim/stats").status_code == 200
    assert control.delete("/_sim/faults").status_code == 204


# -- request log -----------------------------------------------------------------------


def test_request_log_counts_every_answer_with_its_time(clock: ManualClock) -> None:
    """Refused, faulted and served requests are all counted, timed and bounded per path."""
    ticks = ManualClock(100.0)
    with (
        FactorySimulator(KEY, clock=clock, monotonic=ticks) as sim,
        httpx.Client(base_url=sim.url, trust_env=False, timeout=5) as http,
    ):
        sim.add_session("abc")
        auth = {"Authorization": f"Bearer {KEY}"}
        http.get("/api/v0/sessions/abc")
        ticks.now = 101.5
        sim.faults.add(FaultRule(Fault.HTTP_429_RETRY_AFTER, "/api/v0/sessions/abc"))
        http.get("/api/v0/sessions/abc", headers=auth)
        ticks.now = 103.0
        http.get("/api/v0/sessions/abc?computerId=c1", headers=auth)
        http.get("/api/v0/sessions", headers=auth)

        assert [(r.at, r.path, r.status) for r in sim.session_requests("abc")] == [
            (100.0, "/api/v0/sessions/abc", 401),
            (101.5, "/api/v0/sessions/abc", 429),
            (103.0, "/api/v0/sessions/abc", 200),
        ]
        assert (sim.request_count("abc"), sim.request_count("other"), sim.total_requests) == (
            3,
            0,
            4,
        )

        for _ in range(REQUEST_LOG_SIZE + 5):
            http.get("/api/v0/sessions", headers=auth)
        assert len(sim.request_log("/api/v0/sessions")) == REQUEST_LOG_SIZE
        assert sim.path_request_count("/api/v0/sessions") == REQUEST_LOG_SIZE + 6


# -- autopilot ----------------------------------------------------------------------------


def _drive(
    seed: int, steps: int, sessions: int = 30
) -> tuple[list[list[AutopilotStep]], list[list[dict[str, Any]]]]:
    """Run an autopilot on a fresh simulator with a fake clock, one second per step."""
    clock = ManualClock(T0)
    moves: list[list[AutopilotStep]] = []
    history: list[list[dict[str, Any]]] = []
    with FactorySimulator(clock=clock) as sim:
        ids = sim.add_sessions(sessions)
        pilot = Autopilot(sim, random.Random(seed))
        for n in range(steps):
            clock.now = T0 + n
            moves.append(pilot.step(clock.now))
            history.append(
                [{"deleted": True} if sim.session(i).deleted else sim.snapshot_json(i) for i in ids]
            )
    return moves, history


def test_autopilot_is_deterministic_for_a_seed() -> None:
    """Same seed, same clock: the same moves and the same bodies; another seed differs."""
    first = _drive(seed=7, steps=60)
    assert first == _drive(seed=7, steps=60)
    assert first[0] != _drive(seed=8, steps=60)[0]


def test_autopilot_reaches_every_state() -> None:
    """Sessions start, progress, finish, get interrupted, rerun, archive and get deleted."""
    moves, history = _drive(seed=1, steps=200)
    assert {step.move for batch in moves for step in batch} == set(Move)
    bodies = [b for snapshot in history for b in snapshot if "deleted" not in b]
    assert {b["status"] for b in bodies} == {"pending", "running", "idle"}
    assert any("completedAt" in b for b in bodies)
    assert any("archivedAt" in b.get("sessionSettings", {}) for b in bodies)
    assert any("deleted" in b for b in history[-1])
    reruns = [b for b in bodies if b["status"] == "running" and "completedAt" in b]
    assert reruns, "some session started a second run after completing"
    assert max(b["messageCount"] for b in bodies) > 5


def test_autopilot_only_ever_grows_message_counts_and_updated_at() -> None:
    """Per session, messageCount never shrinks and updatedAt never goes back."""
    _, history = _drive(seed=3, steps=120, sessions=10)
    for index in range(10):
        bodies = [snap[index] for snap in history if "deleted" not in snap[index]]
        counts = [b["messageCount"] for b in bodies]
        updated = [b["updatedAt"] for b in bodies]
        assert counts == sorted(counts)
        assert updated == sorted(updated)


def test_autopilot_skips_sessions_deleted_behind_its_back(sim: FactorySimulator) -> None:
    """Sessions deleted through the control API are dropped, not an error."""
    sim.add_sessions(3)
    pilot = Autopilot(sim, random.Random(0), AutopilotOdds(mean_dwell_s=0.001, delete=0))
    pilot.step(T0)
    sim.delete("sim-0002")
    steps = pilot.step(T0 + 1)
    assert {s.session_id for s in steps} == {"sim-0001", "sim-0003"}


def test_autopilot_thread_advances_sessions_until_closed() -> None:
    """`run_in_thread` keeps stepping on the simulator's clock until `close`."""
    with FactorySimulator() as sim:
        sim.add_sessions(3)
        odds = AutopilotOdds(mean_dwell_s=0.001, delete=0)
        with Autopilot(sim, random.Random(0), odds) as pilot:
            pilot.run_in_thread(0.005)
            wait_for(
                lambda: all(s.status != "pending" for s in sim.sessions()),
                what="the autopilot to start every session",
            )
            with pytest.raises(RuntimeError):
                pilot.run_in_thread(0.005)
            assert pilot.running
        assert not pilot.running


# -- command line -----------------------------------------------------------------------


def _read_line(stream: IO[bytes], deadline: float) -> str:
    """One line from a subprocess pipe, failing at the deadline instead of hanging."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete line before the deadline, got {line!r}"
            if selector.select(remaining):
                chunk = os.read(stream.fileno(), 1)
                assert chunk, f"stream closed, got {line!r}"
                line += chunk
    finally:
        selector.close()
    return line.decode()


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled_and_exits_0(stop_signal: signal.Signals) -> None:
    """`python -m watcher.testing.sim` prints its URL and ids, serves them, exits 0 on a signal."""
    command = [
        sys.executable,
        "-m",
        "watcher.testing.sim",
        "--port",
        "0",
        "--sessions",
        "2",
        "--autopilot",
        "0.05",
        "--api-key",
        "fk-cli",
    ]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 20
            first = _read_line(proc.stdout, deadline)
            assert first.startswith("listening on http://127.0.0.1:")
            url = first.removeprefix("listening on ").strip()
            ids = [_read_line(proc.stdout, deadline).split()[1] for _ in range(2)]
            assert ids == ["sim-0001", "sim-0002"]
            with httpx.Client(base_url=url, trust_env=False, timeout=5) as http:
                response = http.get(
                    f"/api/v0/sessions/{ids[0]}", headers={"Authorization": "Bearer fk-cli"}
                )
            assert response.status_code == 200
            assert response.json()["sessionId"] == ids[0]
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("argv", [["--sessions", "-1"], ["--autopilot", "0"], ["--port", "x"]])
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Bad options are a usage error (exit 2) before anything is served."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_raw_bodies_replace_a_session_body_until_cleared(
    sim: FactorySimulator, client: httpx.Client
) -> None:
    """A raw body is served byte for byte, for known and unknown ids, until cleared."""
    sim.add_session("s1", title="kept")
    sim.serve_raw("s1", b'{"title": "\\ud800"}')
    sim.serve_raw("ghost", RawBody(b"<html>", status=502, content_type="text/html"))
    assert client.get("/api/v0/sessions/s1").content == b'{"title": "\\ud800"}'
    ghost = client.get("/api/v0/sessions/ghost")
    assert (ghost.status_code, ghost.headers["Content-Type"], ghost.content) == (
        502,
        "text/html",
        b"<html>",
    )
    sim.serve_raw("s1", None)
    assert client.get("/api/v0/sessions/s1").json()["title"] == "kept"


def test_an_endless_raw_body_goes_on_until_the_client_hangs_up(
    sim: FactorySimulator, client: httpx.Client
) -> None:
    """No Content-Length, and more bytes than anyone should read."""
    sim.serve_raw("s1", RawBody(b"x" * 65536, endless=True))
    with client.stream("GET", "/api/v0/sessions/s1") as response:
        assert "Content-Length" not in response.headers
        read = 0
        for chunk in response.iter_bytes():
            read += len(chunk)
            if read > 4 * 1024 * 1024:
                break
    assert read > 4 * 1024 * 1024
    sim.serve_raw("s1", None)
    assert client.get("/api/v0/sessions/ghost").status_code == 404


def test_http_control_serves_and_clears_raw_bodies(
    sim: FactorySimulator, control: httpx.Client, client: httpx.Client
) -> None:
    """PUT /_sim/sessions/{id}/raw serves text as UTF-8; DELETE goes back to the session."""
    sim.add_session("s1")
    put = control.put("/_sim/sessions/s1/raw", json={"body": '{"a": NaN}', "status": 200})
    assert put.status_code == 204
    assert client.get("/api/v0/sessions/s1").content == b'{"a": NaN}'
    assert control.delete("/_sim/sessions/s1/raw").status_code == 204
    assert client.get("/api/v0/sessions/s1").json()["sessionId"] == "s1"


def test_messages_lists_the_newest_of_a_role_oldest_first(
    sim: FactorySimulator, client: httpx.Client
) -> None:
    """GET /sessions/{id}/messages filters by role, keeps the newest `limit`, oldest first."""
    sim.add_session("s1")
    sim.add_message("s1", "hello", role="user", phase=None)
    sim.add_message("s1", "thinking", phase="commentary")
    first = sim.add_message("s1", "done")
    assert first["phase"] == "final_answer"
    assert first["content"] == [{"type": "text", "text": "done"}]
    answer = client.get("/api/v0/sessions/s1/messages", params={"role": "assistant", "limit": 1})
    assert answer.status_code == 200
    body = answer.json()
    assert [m["content"][0]["text"] for m in body["messages"]] == ["done"]
    assert body["pagination"] == {"hasMore": False, "nextCursor": None}
    every = client.get("/api/v0/sessions/s1/messages").json()["messages"]
    assert [m["role"] for m in every] == ["user", "assistant", "assistant"]
    assert client.get("/api/v0/sessions/nope/messages").status_code == 404
    assert client.get("/api/v0/sessions/s1/messages", params={"limit": "x"}).status_code == 400
    assert sim.path_request_count("/api/v0/sessions/s1/messages") == 3


def test_messages_can_be_added_over_control_and_faulted(
    sim: FactorySimulator, client: httpx.Client, control: httpx.Client
) -> None:
    """POST /_sim/sessions/{id}/messages adds an answer; a fault on the path applies to it."""
    sim.add_session("s1")
    added = control.post("/_sim/sessions/s1/messages", json={"text": "all green"})
    assert added.status_code == 201
    assert control.post("/_sim/sessions/s1/messages", json={"text": 1}).status_code == 400
    assert control.post("/_sim/sessions/zz/messages", json={"text": "x"}).status_code == 404
    sim.faults.add(FaultRule(Fault.HTTP_503, path_prefix="/api/v0/sessions/s1/messages"))
    assert client.get("/api/v0/sessions/s1/messages").status_code == 503
    texts = [
        m["content"][0]["text"]
        for m in client.get("/api/v0/sessions/s1/messages").json()["messages"]
    ]
    assert texts == ["all green"]
    sim.set_messages("s1", [{"id": "odd", "role": "assistant"}])
    assert client.get("/api/v0/sessions/s1/messages").json()["messages"] == [
        {"id": "odd", "role": "assistant"}
    ]
