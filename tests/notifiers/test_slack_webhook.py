"""SlackWebhookNotifier: the real slack-sdk webhook client against FakeSlackWebhook on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.message import FailureKind, SendFailed, Sent, SlackMessage, WebhookMessage
from watcher.core.secret import Secret
from watcher.core.settings import SlackWebhookTarget
from watcher.notifiers.slack_webhook import SlackWebhookNotifier, classify_slack_webhook
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sinks import FakeSlackWebhook

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CANARY_PATH = "/services/T0CANARY/B0CANARY/canaryTokenQ8w2e4r6t8y0"
MESSAGE = SlackMessage(
    text="nightly-refactor finished",
    blocks=(
        {"type": "section", "text": {"type": "mrkdwn", "text": "*nightly-refactor* finished"}},
    ),
)


@pytest.fixture
def hook() -> Iterator[FakeSlackWebhook]:
    with FakeSlackWebhook() as server:
        yield server


def canary_url(server: FakeSlackWebhook) -> str:
    return server.url + CANARY_PATH


async def send_once(
    url: str, message: SlackMessage = MESSAGE, *, client_timeout: float = 10
) -> Sent | SendFailed:
    notifier = SlackWebhookNotifier(SlackWebhookTarget("ops", Secret(url)), timeout=client_timeout)
    try:
        return await notifier.send(message, now=NOW)
    finally:
        await notifier.aclose()


@pytest.mark.anyio
async def test_post_delivers_text_and_blocks_without_unfurling(hook: FakeSlackWebhook) -> None:
    """A post carries the text fallback, the blocks and unfurling turned off."""
    outcome = await send_once(hook.webhook_url)

    assert outcome == Sent()
    [post] = hook.messages
    assert post.payload["text"] == MESSAGE.text
    assert post.payload["blocks"] == list(MESSAGE.blocks)
    assert (post.payload["unfurl_links"], post.payload["unfurl_media"]) == (False, False)


@pytest.mark.anyio
async def test_one_notifier_sends_repeatedly(hook: FakeSlackWebhook) -> None:
    """The notifier's session survives several sends."""
    notifier = SlackWebhookNotifier(SlackWebhookTarget("ops", Secret(hook.webhook_url)))
    try:
        outcomes = [await notifier.send(MESSAGE, now=NOW) for _ in range(3)]
    finally:
        await notifier.aclose()

    assert outcomes == [Sent()] * 3
    assert len(hook.messages) == 3


@pytest.mark.anyio
async def test_revoked_webhook_is_permanent(hook: FakeSlackWebhook) -> None:
    """A removed webhook (403 `invalid_token`) fails permanently."""
    hook.revoke()

    outcome = await send_once(hook.webhook_url)

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert outcome.reason == "slack webhook: HTTP 403: invalid_token"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (403, "invalid_token", FailureKind.PERMANENT),
        (404, "no_service", FailureKind.PERMANENT),
        (404, "channel_not_found", FailureKind.PERMANENT),
        (410, "channel_is_archived", FailureKind.PERMANENT),
        (403, "action_prohibited", FailureKind.PERMANENT),
        (400, "invalid_payload", FailureKind.PERMANENT),
        (400, "no_text", FailureKind.PERMANENT),
        (400, "too_many_attachments", FailureKind.PERMANENT),
        (500, "rollup_error", FailureKind.RETRYABLE),
        (502, "", FailureKind.RETRYABLE),
        (503, "service unavailable", FailureKind.RETRYABLE),
        (429, "", FailureKind.RETRYABLE),
    ],
)
@pytest.mark.anyio
async def test_status_and_body_classify(
    hook: FakeSlackWebhook, status: int, body: str, kind: FailureKind
) -> None:
    """Slack's text bodies and status codes map to retryable or permanent."""
    hook.respond_with(status, body)

    outcome = await send_once(hook.webhook_url)

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is kind
    assert outcome.details["status"] == status
    assert f"HTTP {status}" in outcome.reason


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "kind", "wait"),
    [
        (200, "ok", None, None, None),
        (429, "", "30", FailureKind.RETRYABLE, timedelta(seconds=30)),
        (429, "", "Fri, 02 Jan 2026 03:05:05 GMT", FailureKind.RETRYABLE, timedelta(minutes=1)),
        (500, "", "30", FailureKind.RETRYABLE, None),
        (404, "no_service", None, FailureKind.PERMANENT, None),
        (418, "teapot", None, FailureKind.PERMANENT, None),
    ],
)
def test_classify_slack_webhook_table(
    status: int,
    body: str,
    retry_after: str | None,
    kind: FailureKind | None,
    wait: timedelta | None,
) -> None:
    """2xx is sent; Retry-After is honoured on 429 only, in seconds or as a date."""
    headers = {"Retry-After": retry_after} if retry_after else {}

    outcome = classify_slack_webhook(status, body, headers, now=NOW)

    if kind is None:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert (outcome.kind, outcome.retry_after) == (kind, wait)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.HTTP_500, FailureKind.RETRYABLE),
        (Fault.HTTP_502_HTML, FailureKind.RETRYABLE),
        (Fault.HTTP_503, FailureKind.RETRYABLE),
        (Fault.HTTP_429, FailureKind.RETRYABLE),
        (Fault.HTTP_429_RETRY_AFTER, FailureKind.RETRYABLE),
        # A 200 is Slack's acceptance whatever the body says.
        (Fault.TRUNCATED_JSON, None),
        # Undecodable bytes lose the status inside the SDK: unreadable, so retried.
        (Fault.GARBAGE, FailureKind.RETRYABLE),
        (Fault.STALL, FailureKind.RETRYABLE),
        (Fault.RESET, FailureKind.RETRYABLE),
    ],
)
@pytest.mark.anyio
async def test_each_fault_classifies(
    hook: FakeSlackWebhook, fault: Fault, expected: FailureKind | None
) -> None:
    """Every injected fault yields the documented outcome, never an exception."""
    hook.faults.add(FaultRule(fault, retry_after="4"))

    outcome = await send_once(hook.webhook_url, client_timeout=0.5)

    if expected is None:
        assert outcome == Sent()
    else:
        assert isinstance(outcome, SendFailed)
        assert outcome.kind is expected
    if fault is Fault.HTTP_429_RETRY_AFTER:
        assert isinstance(outcome, SendFailed)
        assert outcome.retry_after == timedelta(seconds=4)


@pytest.mark.anyio
async def test_refused_connection_is_retryable() -> None:
    """Nothing listening at the webhook URL is a retryable connection failure."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        outcome = await send_once(f"http://127.0.0.1:{holder.getsockname()[1]}{CANARY_PATH}")

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.RETRYABLE
    assert outcome.reason.startswith("slack webhook: connection failed")


@pytest.mark.anyio
async def test_invalid_url_is_permanent() -> None:
    """A webhook URL aiohttp cannot use fails permanently, without quoting it."""
    outcome = await send_once("not a url" + CANARY_PATH)

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert outcome.reason == "slack webhook: invalid URL"


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda hook: None, id="sent"),
        pytest.param(lambda hook: hook.revoke(), id="revoked"),
        pytest.param(
            lambda hook: hook.respond_with(404, "no such hook " + CANARY_PATH), id="echoed-path"
        ),
        pytest.param(
            lambda hook: hook.respond_with(400, "canaryTokenQ8w2e4r6t8y0 is bad"), id="echoed-token"
        ),
        pytest.param(lambda hook: hook.faults.add(FaultRule(Fault.RESET)), id="reset"),
        pytest.param(lambda hook: hook.faults.add(FaultRule(Fault.HTTP_502_HTML)), id="502"),
    ],
)
@pytest.mark.anyio
async def test_webhook_url_never_appears_in_reasons_reprs_or_logs(
    hook: FakeSlackWebhook, caplog: pytest.LogCaptureFixture, setup: object
) -> None:
    """The URL is the credential: no reason, repr or DEBUG log line may contain any of it."""
    caplog.set_level(logging.DEBUG)
    setup(hook)  # type: ignore[operator]
    notifier = SlackWebhookNotifier(SlackWebhookTarget("ops", Secret(canary_url(hook))))
    try:
        outcome = await notifier.send(MESSAGE, now=NOW)
    finally:
        await notifier.aclose()

    for text in (repr(notifier), repr(outcome), caplog.text):
        assert "canaryToken" not in text
        assert "T0CANARY" not in text


@pytest.mark.anyio
async def test_a_webhook_message_is_a_programming_error(hook: FakeSlackWebhook) -> None:
    """Handing a Slack webhook notifier a WebhookMessage raises TypeError."""
    notifier = SlackWebhookNotifier(SlackWebhookTarget("ops", Secret(hook.webhook_url)))
    try:
        with pytest.raises(TypeError, match="WebhookMessage"):
            await notifier.send(WebhookMessage("id", b"{}", NOW), now=NOW)
    finally:
        await notifier.aclose()
