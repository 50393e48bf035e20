"""SlackNotifier: the real slack-sdk client against FakeSlack on loopback, and the classifier."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.clock import ManualClock
from watcher.core.message import FailureKind, SendFailed, Sent, SlackMessage, WebhookMessage
from watcher.core.secret import Secret
from watcher.core.settings import SlackTarget
from watcher.notifiers.slack import SlackNotifier, classify_slack_error
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sinks import FakeSlack

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CHANNEL = "C0123ABCD"
CANARY_TOKEN = "xoxb-CANARY-7f3a9c-do-not-log"
MESSAGE = SlackMessage(
    text="nightly-refactor finished",
    blocks=(
        {"type": "section", "text": {"type": "mrkdwn", "text": "*nightly-refactor* finished"}},
    ),
)


@pytest.fixture
def clock() -> ManualClock:
    """A clock at 1000 s that only the test moves."""
    return ManualClock(1000.0)


@pytest.fixture
def slack(clock: ManualClock) -> Iterator[FakeSlack]:
    with FakeSlack(token=CANARY_TOKEN, channels=(CHANNEL,), clock=clock) as server:
        yield server


def target(server: FakeSlack, token: str = CANARY_TOKEN, channel: str = CHANNEL) -> SlackTarget:
    return SlackTarget(
        name="team-slack", token=Secret(token), channel=channel, api_url=server.api_url
    )


async def send_once(
    server: FakeSlack,
    message: SlackMessage = MESSAGE,
    *,
    token: str = CANARY_TOKEN,
    channel: str = CHANNEL,
    client_timeout: float = 10,
) -> Sent | SendFailed:
    notifier = SlackNotifier(target(server, token, channel), timeout=client_timeout)
    try:
        return await notifier.send(message, now=NOW)
    finally:
        await notifier.aclose()


@pytest.mark.anyio
async def test_post_returns_the_ts_and_slack_records_text_and_blocks(slack: FakeSlack) -> None:
    """A post lands in the channel with its text fallback and blocks; the handle is its ts."""
    outcome = await send_once(slack)

    assert outcome == Sent(handle="1700000000.000100")
    [post] = slack.messages
    assert (post.channel, post.text, post.ts) == (CHANNEL, MESSAGE.text, "1700000000.000100")
    assert list(post.blocks) == list(MESSAGE.blocks)


@pytest.mark.anyio
async def test_one_notifier_posts_several_messages_over_its_session(
    slack: FakeSlack, clock: ManualClock
) -> None:
    """The notifier reuses its HTTP session across sends and yields increasing ts handles."""
    notifier = SlackNotifier(target(slack))
    handles: list[str] = []
    try:
        for _ in range(3):
            outcome = await notifier.send(MESSAGE, now=NOW)
            assert isinstance(outcome, Sent)
            assert outcome.handle is not None
            handles.append(outcome.handle)
            clock.now += 1.0
    finally:
        await notifier.aclose()

    assert handles == sorted(handles)
    assert len(set(handles)) == 3


@pytest.mark.anyio
async def test_update_edits_the_posted_message(slack: FakeSlack, clock: ManualClock) -> None:
    """chat.update replaces the text and blocks of a message posted earlier."""
    notifier = SlackNotifier(target(slack))
    try:
        posted = await notifier.send(MESSAGE, now=NOW)
        assert isinstance(posted, Sent)
        assert posted.handle is not None
        clock.advance(1)
        updated = await notifier.update(CHANNEL, posted.handle, SlackMessage("now idle"), now=NOW)
    finally:
        await notifier.aclose()

    assert updated == Sent(handle=posted.handle)
    latest = slack.latest(CHANNEL, posted.handle)
    assert latest is not None
    assert (latest.text, latest.edited) == ("now idle", True)


@pytest.mark.anyio
async def test_update_of_an_unknown_message_is_permanent(slack: FakeSlack) -> None:
    """Updating a ts Slack does not know is a permanent `message_not_found` failure."""
    notifier = SlackNotifier(target(slack))
    try:
        outcome = await notifier.update(CHANNEL, "1.000000", MESSAGE, now=NOW)
    finally:
        await notifier.aclose()

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert "message_not_found" in outcome.reason


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("ratelimited", FailureKind.RETRYABLE),
        ("internal_error", FailureKind.RETRYABLE),
        ("fatal_error", FailureKind.RETRYABLE),
        ("service_unavailable", FailureKind.RETRYABLE),
        ("request_timeout", FailureKind.RETRYABLE),
        ("invalid_auth", FailureKind.PERMANENT),
        ("not_authed", FailureKind.PERMANENT),
        ("account_inactive", FailureKind.PERMANENT),
        ("token_revoked", FailureKind.PERMANENT),
        ("channel_not_found", FailureKind.PERMANENT),
        ("not_in_channel", FailureKind.PERMANENT),
        ("is_archived", FailureKind.PERMANENT),
        ("invalid_blocks", FailureKind.PERMANENT),
        ("msg_too_long", FailureKind.PERMANENT),
        ("no_text", FailureKind.PERMANENT),
        ("missing_scope", FailureKind.PERMANENT),
        ("some_future_error", FailureKind.PERMANENT),
    ],
)
@pytest.mark.anyio
async def test_slack_error_names_classify(slack: FakeSlack, error: str, kind: FailureKind) -> None:
    """Each `ok: false` error name Slack answers with maps to retryable or permanent."""
    slack.inject_error(error)

    outcome = await send_once(slack)

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is kind
    assert error in outcome.reason
    assert outcome.details["error"] == error


@pytest.mark.parametrize(
    ("status", "error", "retry_after", "kind", "wait"),
    [
        (429, "ratelimited", "7", FailureKind.RETRYABLE, timedelta(seconds=7)),
        (429, None, None, FailureKind.RETRYABLE, None),
        (200, "ratelimited", "2", FailureKind.RETRYABLE, timedelta(seconds=2)),
        (500, None, None, FailureKind.RETRYABLE, None),
        (503, "service_unavailable", None, FailureKind.RETRYABLE, None),
        (400, None, None, FailureKind.PERMANENT, None),
        (404, "unknown_method", None, FailureKind.PERMANENT, None),
        (403, None, None, FailureKind.PERMANENT, None),
        (200, None, None, FailureKind.RETRYABLE, None),
    ],
)
def test_classify_slack_error_table(
    status: int,
    error: str | None,
    retry_after: str | None,
    kind: FailureKind,
    wait: timedelta | None,
) -> None:
    """Status and error name decide the kind; Retry-After only matters for rate limits."""
    headers = {"Retry-After": retry_after} if retry_after else {}

    outcome = classify_slack_error("chat.postMessage", status, error, headers, now=NOW)

    assert (outcome.kind, outcome.retry_after) == (kind, wait)
    assert outcome.details["status"] == status


@pytest.mark.anyio
async def test_second_post_within_the_interval_is_rate_limited_with_retry_after(
    slack: FakeSlack,
) -> None:
    """Slack's 429 `ratelimited` is retryable after the Retry-After it sent."""
    first = await send_once(slack)
    second = await send_once(slack)

    assert isinstance(first, Sent)
    assert isinstance(second, SendFailed)
    assert (second.kind, second.retry_after) == (FailureKind.RETRYABLE, timedelta(seconds=1))
    assert slack.rate_limited == 1
    assert len(slack.messages) == 1


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        (Fault.HTTP_500, None),
        (Fault.HTTP_502_HTML, None),
        (Fault.HTTP_503, None),
        (Fault.HTTP_429, None),
        (Fault.HTTP_429_RETRY_AFTER, timedelta(seconds=5)),
        (Fault.TRUNCATED_JSON, None),
        (Fault.GARBAGE, None),
        (Fault.STALL, None),
        (Fault.RESET, None),
    ],
)
@pytest.mark.anyio
async def test_every_fault_is_a_retryable_failure(
    slack: FakeSlack, fault: Fault, retry_after: timedelta | None
) -> None:
    """Server errors, rate limits, unreadable answers, stalls and resets are all retryable."""
    slack.faults.add(FaultRule(fault, retry_after="5"))

    outcome = await send_once(slack, client_timeout=0.5)

    assert isinstance(outcome, SendFailed)
    assert (outcome.kind, outcome.retry_after) == (FailureKind.RETRYABLE, retry_after)
    assert slack.messages == []


@pytest.mark.anyio
async def test_stall_reports_a_timeout(slack: FakeSlack) -> None:
    """A response that never completes ends at the notifier's timeout, as `timed out`."""
    slack.faults.add(FaultRule(Fault.STALL))

    outcome = await send_once(slack, client_timeout=0.3)

    assert isinstance(outcome, SendFailed)
    assert outcome.reason == "slack chat.postMessage: timed out"


@pytest.mark.anyio
async def test_refused_connection_is_retryable() -> None:
    """Nothing listening on the API port is a retryable connection failure."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        port = holder.getsockname()[1]
        notifier = SlackNotifier(
            SlackTarget(
                "team-slack", Secret(CANARY_TOKEN), CHANNEL, api_url=f"http://127.0.0.1:{port}/api/"
            )
        )
        try:
            outcome = await notifier.send(MESSAGE, now=NOW)
        finally:
            await notifier.aclose()

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.RETRYABLE
    assert "connection failed" in outcome.reason


@pytest.mark.parametrize(
    ("token", "channel", "archive", "error"),
    [
        ("xoxb-wrong-token", CHANNEL, False, "invalid_auth"),
        (CANARY_TOKEN, "C9999", False, "channel_not_found"),
        (CANARY_TOKEN, CHANNEL, True, "is_archived"),
    ],
)
@pytest.mark.anyio
async def test_refusals_from_fake_slack_are_permanent(
    slack: FakeSlack, token: str, channel: str, archive: bool, error: str
) -> None:
    """A wrong token, unknown channel or archived channel fail permanently, named by Slack."""
    if archive:
        slack.set_channel_archived(CHANNEL)

    outcome = await send_once(slack, token=token, channel=channel)

    assert isinstance(outcome, SendFailed)
    assert outcome.kind is FailureKind.PERMANENT
    assert outcome.details["error"] == error


@pytest.mark.anyio
async def test_token_never_appears_in_reasons_reprs_or_sdk_logs(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever happens, the bot token stays out of reasons, reprs and DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    slack.inject_error(CANARY_TOKEN)  # a server echoing the token back as its error name
    slack.faults.add(FaultRule(Fault.HTTP_502_HTML))
    notifier = SlackNotifier(target(slack))
    outcomes = []
    try:
        outcomes.append(await notifier.send(MESSAGE, now=NOW))
        outcomes.append(await notifier.send(MESSAGE, now=NOW))
        outcomes.append(await notifier.send(MESSAGE, now=NOW))
    finally:
        await notifier.aclose()

    assert isinstance(outcomes[0], SendFailed)
    assert isinstance(outcomes[1], SendFailed)
    assert isinstance(outcomes[2], Sent)
    for text in (repr(notifier), *map(repr, outcomes), caplog.text):
        assert CANARY_TOKEN not in text


@pytest.mark.anyio
async def test_environment_proxy_is_bypassed_for_loopback(
    slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slack-sdk ignores NO_PROXY; the notifier still talks to a loopback API directly."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{holder.getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)

        outcome = await send_once(slack)

    assert isinstance(outcome, Sent)


@pytest.mark.anyio
async def test_a_webhook_message_is_a_programming_error(slack: FakeSlack) -> None:
    """Handing a Slack notifier a WebhookMessage raises TypeError instead of sending."""
    notifier = SlackNotifier(target(slack))
    wrong = WebhookMessage("id", b"{}", NOW)
    try:
        with pytest.raises(TypeError, match="WebhookMessage"):
            await notifier.send(wrong, now=NOW)
        with pytest.raises(TypeError, match="WebhookMessage"):
            await notifier.update(CHANNEL, "1.0", wrong, now=NOW)  # type: ignore[arg-type]
    finally:
        await notifier.aclose()
    assert slack.messages == []


@pytest.mark.anyio
async def test_an_unusable_api_url_is_permanent() -> None:
    """An API URL aiohttp cannot use fails permanently instead of retrying forever."""
    notifier = SlackNotifier(
        SlackTarget("team-slack", Secret(CANARY_TOKEN), CHANNEL, api_url="ftp://127.0.0.1/api/")
    )
    try:
        outcome = await notifier.send(MESSAGE, now=NOW)
    finally:
        await notifier.aclose()

    assert isinstance(outcome, SendFailed)
    assert (outcome.kind, outcome.reason) == (
        FailureKind.PERMANENT,
        "slack chat.postMessage: invalid URL",
    )


@pytest.mark.anyio
async def test_card_calls_post_find_link_and_update_through_the_sdk(
    slack: FakeSlack, clock: ManualClock
) -> None:
    """A marked card is found by its marker; replies go to its thread; a deleted card's
    update is flagged `card_gone`, and its permalink is None.
    """
    notifier = SlackNotifier(target(slack))
    try:
        card = await notifier.post(MESSAGE, now=NOW, marker="m-1")
        assert isinstance(card, Sent)
        assert card.handle is not None
        clock.advance(2)
        reply = await notifier.post(SlackMessage(text="line"), now=NOW, thread_ts=card.handle)
        assert isinstance(reply, Sent)
        assert [p.text for p in slack.replies(CHANNEL, card.handle)] == ["line"]
        epoch = datetime.fromtimestamp(0, tz=UTC)
        assert await notifier.find_card("m-1", epoch, now=NOW) == card.handle
        assert await notifier.find_card("m-2", epoch, now=NOW) is None
        link = await notifier.permalink(card.handle, now=NOW)
        assert link is not None
        assert link.startswith("https://fake.slack.test/")
        slack.delete_message(CHANNEL, card.handle)
        clock.advance(2)
        gone = await notifier.update(CHANNEL, card.handle, MESSAGE, now=NOW)
        assert isinstance(gone, SendFailed)
        assert (gone.kind, gone.details.get("card_gone")) == (FailureKind.PERMANENT, True)
        assert await notifier.permalink(card.handle, now=NOW) is None
        slack.history_scope = False
        refused = await notifier.find_card("m-1", epoch, now=NOW)
        assert isinstance(refused, SendFailed)
        assert refused.kind is FailureKind.PERMANENT
        assert "missing_scope" in refused.reason
    finally:
        await notifier.aclose()


@pytest.mark.anyio
async def test_a_transient_update_failure_is_not_card_gone(slack: FakeSlack) -> None:
    """Only errors no retry can fix mark a card as gone; internal_error is retryable."""
    notifier = SlackNotifier(target(slack))
    try:
        card = await notifier.post(MESSAGE, now=NOW)
        assert isinstance(card, Sent)
        assert card.handle is not None
        slack.inject_error("internal_error")
        failed = await notifier.update(CHANNEL, card.handle, MESSAGE, now=NOW)
        assert isinstance(failed, SendFailed)
        assert failed.kind is FailureKind.RETRYABLE
        assert "card_gone" not in failed.details
    finally:
        await notifier.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("page_size", "found"), [(3, True), (2, False)])
async def test_finding_a_card_pages_through_history_a_few_pages_at_most(
    slack: FakeSlack, clock: ManualClock, page_size: int, found: bool
) -> None:
    """The marked card, 10 messages back, is found on page 4 of 3; pages of 2 give up at 5."""
    notifier = SlackNotifier(target(slack))
    try:
        card = await notifier.post(MESSAGE, now=NOW, marker="m-old")
        assert isinstance(card, Sent)
        for _ in range(10):
            clock.advance(2)
            assert isinstance(await notifier.post(MESSAGE, now=NOW), Sent)
        slack.history_page_size = page_size
        epoch = datetime.fromtimestamp(0, tz=UTC)
        calls = slack.calls("conversations.history")
        ts = await notifier.find_card("m-old", epoch, now=NOW)
        assert (ts == card.handle) is found
        assert slack.calls("conversations.history") - calls == (4 if found else 5)
    finally:
        await notifier.aclose()
