"""`factory-watcher doctor`: online checks of a config, one line each with what to do.

The imperative shell around `watcher.commands.diagnosis`: it loads the
config, asks each service one harmless question (the Factory API lists one
session; Slack's `auth.test` and `conversations.info`; an empty payload to a
Slack incoming webhook, which Slack refuses without posting; a GET to a
generic webhook), opens the state database, and hands what it saw to the
pure verdicts. `--send` also sends each target a test notification (signed,
for a webhook with a secret). Exit 0 when nothing is a problem, 1 otherwise.
Everything printed is masked with the config's secrets.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import anyio
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from watcher import USER_AGENT
from watcher.commands.diagnosis import (
    Finding,
    HttpAnswer,
    NoAnswer,
    SlackReply,
    StoreObservation,
    api_findings,
    check_failed_finding,
    clock_finding,
    config_findings,
    exit_code,
    render_text,
    send_finding,
    slack_findings,
    slack_webhook_finding,
    state_finding,
    to_json,
    webhook_finding,
)
from watcher.commands.run import send_test_notification
from watcher.config.loader import ConfigError, load_settings
from watcher.core.message import Sent
from watcher.core.model import Event
from watcher.core.samples import build_test_notification
from watcher.core.secret import redact
from watcher.core.settings import (
    Settings,
    SlackTarget,
    SlackWebhookTarget,
    Target,
    WebhookTarget,
)
from watcher.notifiers.base import transport_reason
from watcher.notifiers.slack import slack_client
from watcher.notifiers.webhook import verify_context
from watcher.poll.api import env_proxy
from watcher.store import SqliteStore, StoreError
from watcher.store.open import open_store, state_location

Clock = Callable[[], datetime]
PROBE_TIMEOUT = 10.0  # seconds; the Factory API probe uses factory.timeout
BODY_LIMIT = 65536  # enough of any probe's answer to read its error words


def run_doctor(
    config: Path,
    *,
    out: TextIO,
    as_json: bool = False,
    send: bool = False,
    now: Clock = lambda: datetime.now(UTC),
    env: Mapping[str, str] | None = None,
) -> int:
    """Check `config` online and print one line per check (or one JSON document).

    `env` (default `os.environ`) feeds the config's `${NAME}` secrets; `now`
    is this machine's clock, compared with the servers' `Date` headers.
    Returns the exit code: 0 when no check found a problem, 1 otherwise.
    """
    try:
        settings = load_settings(config, env=env)
    except ConfigError as error:
        findings = config_findings(str(config), [str(p) for p in error.problems])
        _print(findings, as_json, (), out)
        return exit_code(findings)
    findings = [*config_findings(str(config), []), *anyio.run(diagnose, settings, send, now)]
    _print(findings, as_json, settings.secret_values(), out)
    return exit_code(findings)


def _print(findings: list[Finding], as_json: bool, secrets: tuple[str, ...], out: TextIO) -> None:
    text = json.dumps(to_json(findings), indent=2) if as_json else render_text(findings)
    print(redact(text, secrets), file=out)


async def diagnose(settings: Settings, send: bool, now: Clock) -> list[Finding]:
    """Every online check of `settings`, in the order they are printed (clock last)."""
    api = await probe_api(settings)
    findings = api_findings(settings.factory.base_url, api)
    dates: list[tuple[str, str | None]] = []
    if isinstance(api, HttpAnswer):
        dates.append((_host(settings.factory.base_url), api.date))
    for target in settings.targets.values():
        try:
            found, date = await check_target(target)
        except Exception as error:  # one target's check failing is its line, not doctor's end
            found, date = [check_failed_finding(target.name, type(error).__name__)], None
        findings.extend(found)
        if date is not None:
            dates.append(("Slack", date))
        if send:
            findings.append(send_finding(target.name, await send_test(target, now())))
    if settings.state_url is None:
        findings.append(state_finding(inspect_store(settings.state_path)))
    else:
        findings.append(state_finding(inspect_database(settings)))
    findings.append(clock_finding(dates, now()))
    return findings


def _host(url: str) -> str:
    return urlsplit(url).hostname or "the server"


def _origin(url: str) -> str:
    """Scheme, host and port of `url`: a path or query may hold a token, so it is never shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


async def _http(
    method: str,
    url: str,
    *,
    request_timeout: float,
    verify: ssl.SSLContext | bool = True,
    **kwargs: Any,
) -> HttpAnswer | NoAnswer:
    """One request; its answer (status, Date, the start of the body) or why there was none."""
    started = time.monotonic()
    try:
        async with (
            httpx.AsyncClient(
                timeout=request_timeout,
                follow_redirects=False,
                verify=verify,
                proxy=env_proxy(url),
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            ) as client,
            client.stream(method, url, **kwargs) as response,
        ):
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= BODY_LIMIT:
                    break
    except httpx.TimeoutException:
        return NoAnswer("timed out")
    except httpx.InvalidURL:
        return NoAnswer("invalid URL")
    except httpx.HTTPError as error:
        return no_answer(error)
    elapsed = round((time.monotonic() - started) * 1000)
    return HttpAnswer(response.status_code, bytes(body), response.headers.get("Date"), elapsed)


def no_answer(error: BaseException) -> NoAnswer:
    """Why a request got no answer, in the words a person would use; never the URL."""
    cause: BaseException | None = error
    for _ in range(6):  # the OS error is wrapped once or twice by the HTTP client
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return NoAnswer("connection refused: nothing listens there")
        if isinstance(cause, socket.gaierror):
            return NoAnswer("the host name does not resolve")
        if isinstance(cause, TimeoutError):
            return NoAnswer("timed out")
        cause = cause.__cause__ or cause.__context__
    return NoAnswer(transport_reason("", error).removeprefix(": "))


async def probe_api(settings: Settings) -> HttpAnswer | NoAnswer:
    """`GET /api/v0/sessions?limit=1` with the configured key: the call discovery makes."""
    factory = settings.factory
    return await _http(
        "GET",
        factory.base_url.rstrip("/") + "/api/v0/sessions",
        request_timeout=factory.timeout.total_seconds(),
        params={"limit": "1"},
        headers={
            "Authorization": f"Bearer {factory.api_key.reveal()}",
            "Accept": "application/json",
        },
    )


async def check_target(target: Target) -> tuple[list[Finding], str | None]:
    """The findings for one target, and a server `Date` header seen on the way (Slack's)."""
    if isinstance(target, SlackTarget):
        auth, info = await probe_slack(target)
        date = auth.date if isinstance(auth, SlackReply) else None
        return slack_findings(target, auth, info), date
    if isinstance(target, SlackWebhookTarget):
        url = target.url.reveal()
        answer = await _http("POST", url, request_timeout=PROBE_TIMEOUT, json={})
        return [slack_webhook_finding(target.name, _host(url), answer)], None
    assert isinstance(target, WebhookTarget)
    verify = verify_context(target)
    answer = await _http("GET", target.url, request_timeout=PROBE_TIMEOUT, verify=verify)
    return [webhook_finding(target.name, _origin(target.url), answer)], None


async def probe_slack(
    target: SlackTarget,
) -> tuple[SlackReply | NoAnswer, SlackReply | NoAnswer | None]:
    """`auth.test`, then (with a valid token) `conversations.info` for the target's channel."""
    client, session = slack_client(target, PROBE_TIMEOUT)
    session.ensure_open()
    try:
        auth = await _slack_call(client.auth_test)
        if not isinstance(auth, SlackReply) or not auth.ok:
            return auth, None
        return auth, await _slack_call(client.conversations_info, channel=target.channel)
    finally:
        await session.aclose()


async def _slack_call(
    call: Callable[..., Awaitable[AsyncSlackResponse]], **kwargs: Any
) -> SlackReply | NoAnswer:
    """One Web API call as a `SlackReply` (ok or not), or `NoAnswer` when none came."""
    try:
        response: Any = await call(**kwargs)
    except SlackApiError as error:
        response = error.response
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return no_answer(error)
    data = getattr(response, "data", None)
    raw_headers = getattr(response, "headers", None) or {}
    headers = {str(k).lower(): str(v) for k, v in raw_headers.items()}
    listed = headers.get("x-oauth-scopes")
    scopes = None if listed is None else frozenset(s.strip() for s in listed.split(",") if s)
    if not isinstance(data, dict):
        status = getattr(response, "status_code", None) or getattr(response, "status", "?")
        return SlackReply(ok=False, error=f"HTTP {status}", scopes=scopes)
    error_name = data.get("error")
    return SlackReply(
        ok=bool(data.get("ok")),
        error=error_name if isinstance(error_name, str) else None,
        data=data,
        scopes=scopes,
        date=headers.get("date"),
    )


def doctor_event(now: datetime) -> Event:
    """The test notification `--send` sends: it says plainly it is a test."""
    return build_test_notification(now, "doctor", "factory-watcher doctor test notification")


async def send_test(target: Target, now: datetime) -> str | None:
    """Send `target` the test notification; None when delivered, else why not."""
    outcome = await send_test_notification(target, doctor_event(now), "doctor")
    return None if isinstance(outcome, Sent) else f"{outcome.kind}: {outcome.reason}"


def inspect_database(settings: Settings) -> StoreObservation:
    """Open the PostgreSQL state as the daemon does (migrating it) and check its schema."""
    location = state_location(settings)
    try:
        store = open_store(settings)
    except StoreError as error:
        return StoreObservation(location, True, False, error=str(error))
    try:
        return StoreObservation(location, True, True, store.integrity_ok())
    finally:
        store.close()


def inspect_store(path: Path) -> StoreObservation:
    """Open the state database as `outbox` does and run its integrity check.

    A database that does not exist yet is not created: its nearest existing
    folder must be writable, since `run` creates it there.
    """
    if not path.exists():
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return StoreObservation(str(path), False, os.access(folder, os.W_OK | os.X_OK))
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    try:
        store = SqliteStore(path)
    except (StoreError, sqlite3.Error, OSError) as error:
        return StoreObservation(str(path), True, writable, error=str(error))
    try:
        healthy = store.integrity_ok()
    except sqlite3.Error as error:
        return StoreObservation(str(path), True, writable, error=str(error))
    finally:
        store.close()
    return StoreObservation(str(path), True, writable, healthy)
