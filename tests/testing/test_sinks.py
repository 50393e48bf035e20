"""The fake destinations: FakeSlack, FakeSlackWebhook and WebhookReceiver, spoken to over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.clock import ManualClock
from watcher.notifiers.signing import SigningSecretError, signature_headers
from watcher.testing.fakehttp import Fault, FaultRule
from watcher.testing.sinks import (
    FakeSlack,
    FakeSlackWebhook,
    ReceivedWebhook,
    SlackPost,
    SlackWebhookPost,
    WebhookReceiver,
)

TOKEN = "xoxb-test"
CHANNEL = "C0123ABCD"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def clock() -> ManualClock:
    """A clock at 500 s that only the test moves."""
    return ManualClock(500.0)


@pytest.fixture
def slack(clock: ManualClock) -> Iterator[FakeSlack]:
    with FakeSlack(channels=(CHANNEL, "C0SECOND"), clock=clock) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def post_json(
    http: httpx.Client,
    slack: FakeSlack,
    method: str,
    body: dict[str, Any],
    token: str | None = TOKEN,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(f"{slack.api_url}{method}", json=body, headers=headers)


# --- FakeSlack ----------------------------------------------------------------------------


def test_post_message_answers_like_slack_and_records_the_post(
    slack: FakeSlack, http: httpx.Client, clock: ManualClock
) -> None:
    """chat.postMessage returns ok with channel and ts, and the post is recorded."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]

    response = post_json(
        http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "hi", "blocks": blocks}
    )

    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["ts"] == "1700000000.000100"
    assert slack.messages == [
        SlackPost(CHANNEL, "hi", tuple(blocks), "1700000000.000100", clock.now)
    ]


def test_form_encoded_posts_with_token_and_json_blocks_are_understood(
    slack: FakeSlack, http: httpx.Client
) -> None:
    """Form bodies carry the token as a field and blocks as a JSON string, as Slack allows."""
    blocks = [{"type": "divider"}]

    response = http.post(
        f"{slack.api_url}chat.postMessage",
        data={"token": TOKEN, "channel": CHANNEL, "text": "form", "blocks": json.dumps(blocks)},
    )

    assert response.json()["ok"] is True
    [post] = slack.messages
    assert (post.text, post.blocks) == ("form", tuple(blocks))


@pytest.mark.parametrize(
    ("token", "body", "error"),
    [
        (None, {"channel": CHANNEL, "text": "x"}, "not_authed"),
        ("xoxb-wrong", {"channel": CHANNEL, "text": "x"}, "invalid_auth"),
        (TOKEN, {"channel": "C0NOPE", "text": "x"}, "channel_not_found"),
        (TOKEN, {"text": "x"}, "channel_not_found"),
        (TOKEN, {"channel": CHANNEL}, "no_text"),
        (TOKEN, {"channel": CHANNEL, "text": "   "}, "no_text"),
    ],
)
def test_refusals_are_http_200_with_ok_false(
    slack: FakeSlack, http: httpx.Client, token: str | None, body: dict[str, Any], error: str
) -> None:
    """Like Slack, auth, channel and content errors come back as 200 `ok: false`."""
    response = post_json(http, slack, "chat.postMessage", body, token=token)

    assert (response.status_code, response.json()) == (200, {"ok": False, "error": error})
    assert slack.messages == []


def test_invalid_json_and_unknown_methods(slack: FakeSlack, http: httpx.Client) -> None:
    """A broken JSON body is `invalid_json`; an unknown method is 404 `unknown_method`."""
    broken = http.post(
        f"{slack.api_url}chat.postMessage",
        content=b"{nope",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    unknown = post_json(http, slack, "chat.delete", {"channel": CHANNEL})

    assert broken.json() == {"ok": False, "error": "invalid_json"}
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_method")


def test_archived_channel_refuses_posts(slack: FakeSlack, http: httpx.Client) -> None:
    """After set_channel_archived, posts to that channel fail with `is_archived`."""
    slack.set_channel_archived(CHANNEL)

    response = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "x"})

    assert response.json() == {"ok": False, "error": "is_archived"}


def test_auth_test_answers_for_the_right_token(slack: FakeSlack, http: httpx.Client) -> None:
    """auth.test says who the bot is, by GET or POST, and refuses a wrong token."""
    good = http.get(f"{slack.api_url}auth.test", headers={"Authorization": f"Bearer {TOKEN}"})
    bad = post_json(http, slack, "auth.test", {}, token="xoxb-wrong")

    assert good.json()["ok"] is True
    assert good.json()["team_id"] == "T000"
    assert bad.json() == {"ok": False, "error": "invalid_auth"}


def test_rate_limit_per_channel_with_retry_after(
    slack: FakeSlack, http: httpx.Client, clock: ManualClock
) -> None:
    """A post to a channel too soon after the last is 429 `ratelimited`; others pass."""
    body = {"channel": CHANNEL, "text": "x"}
    first = post_json(http, slack, "chat.postMessage", body)
    clock.now += 0.85
    too_soon = post_json(http, slack, "chat.postMessage", body)
    other_channel = post_json(http, slack, "chat.postMessage", {"channel": "C0SECOND", "text": "y"})
    clock.now += 0.05  # 0.9 s after the last accepted post: within the default grace
    later = post_json(http, slack, "chat.postMessage", body)

    assert [r.status_code for r in (first, too_soon, other_channel, later)] == [200, 429, 200, 200]
    assert too_soon.json() == {"ok": False, "error": "ratelimited"}
    assert too_soon.headers["Retry-After"] == "1"
    assert slack.rate_limited == 1
    assert len(slack.messages) == 3


def test_ts_values_increase(slack: FakeSlack, http: httpx.Client, clock: ManualClock) -> None:
    """Every accepted post gets a larger ts, formatted like Slack's."""
    stamps = []
    for _ in range(3):
        stamps.append(
            post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "x"}).json()[
                "ts"
            ]
        )
        clock.now += 1

    assert stamps == ["1700000000.000100", "1700000000.000200", "1700000000.000300"]


def test_update_replaces_a_message_and_unknown_ts_is_refused(
    slack: FakeSlack, http: httpx.Client, clock: ManualClock
) -> None:
    """chat.update edits a posted message; an unknown ts is `message_not_found`."""
    ts = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "v1"}).json()["ts"]

    clock.advance(1)
    edited = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": ts, "text": "v2"})
    clock.advance(1)
    missing = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": "1.0", "text": "v2"})

    assert edited.json()["ok"] is True
    assert missing.json() == {"ok": False, "error": "message_not_found"}
    latest = slack.latest(CHANNEL, ts)
    assert latest is not None
    assert (latest.text, latest.edited) == ("v2", True)
    assert [post.text for post in slack.messages] == ["v1"]
    assert [post.text for post in slack.updates] == ["v2"]


def test_injected_errors_answer_the_next_calls_then_stop(
    slack: FakeSlack, http: httpx.Client
) -> None:
    """inject_error answers `times` calls with the chosen error, status and Retry-After."""
    slack.inject_error("internal_error", status=500, times=2, retry_after="9")
    body = {"channel": CHANNEL, "text": "x"}

    answers = [post_json(http, slack, "chat.postMessage", body) for _ in range(3)]

    assert [a.status_code for a in answers] == [500, 500, 200]
    assert answers[0].json() == {"ok": False, "error": "internal_error"}
    assert answers[0].headers["Retry-After"] == "9"


def test_faults_come_before_routing(slack: FakeSlack, http: httpx.Client) -> None:
    """An injected fault answers the request and nothing is recorded."""
    slack.faults.add(FaultRule(Fault.HTTP_503, path_prefix="/api/chat.postMessage"))

    response = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "x"})

    assert response.status_code == 503
    assert slack.messages == []


def test_on_message_sees_posts_and_updates(clock: ManualClock, http: httpx.Client) -> None:
    """The callback (used by `demo` to print) gets every accepted post and edit."""
    seen: list[SlackPost] = []
    with FakeSlack(on_message=seen.append, clock=clock) as server:
        ts = post_json(http, server, "chat.postMessage", {"channel": CHANNEL, "text": "a"}).json()[
            "ts"
        ]
        clock.advance(1)
        post_json(http, server, "chat.update", {"channel": CHANNEL, "ts": ts, "text": "b"})
        server.inject_error("fatal_error")
        post_json(http, server, "chat.postMessage", {"channel": CHANNEL, "text": "c"})

    assert [(post.text, post.edited) for post in seen] == [("a", False), ("b", True)]


def test_concurrent_posts_are_all_recorded_with_unique_ts() -> None:
    """Posts from many threads at once are counted exactly and never share a ts."""
    channels = tuple(f"C{i:04d}" for i in range(8))
    with FakeSlack(channels=channels, min_interval_s=0) as server:

        def post_many(channel: str) -> list[int]:
            with httpx.Client(timeout=5) as client:
                return [
                    post_json(
                        client, server, "chat.postMessage", {"channel": channel, "text": "x"}
                    ).status_code
                    for _ in range(10)
                ]

        with ThreadPoolExecutor(max_workers=len(channels)) as pool:
            statuses = [s for result in pool.map(post_many, channels) for s in result]

        messages = server.messages

    assert statuses == [200] * 80
    assert len(messages) == 80
    assert len({post.ts for post in messages}) == 80


# --- FakeSlackWebhook ---------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[FakeSlackWebhook]:
    with FakeSlackWebhook() as server:
        yield server


def test_webhook_records_payloads_and_answers_ok(
    hook: FakeSlackWebhook, http: httpx.Client
) -> None:
    """A JSON post under /services/ is recorded and answered `ok` as text/plain."""
    response = http.post(hook.webhook_url, json={"text": "hello"})

    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["content-type"].startswith("text/plain")
    [post] = hook.messages
    assert (post.path, post.payload) == (hook.webhook_url.removeprefix(hook.url), {"text": "hello"})


@pytest.mark.parametrize(
    ("path", "content", "status", "text"),
    [
        ("/services/T1/B1/Z", b"{not json", 400, "invalid_payload"),
        ("/services/T1/B1/Z", b"[1, 2]", 400, "invalid_payload"),
        ("/services/T1/B1/Z", b'{"unfurl_links": false}', 400, "no_text"),
        ("/hooks/elsewhere", b'{"text": "x"}', 404, "no_service"),
    ],
)
def test_webhook_refusals(
    hook: FakeSlackWebhook, http: httpx.Client, path: str, content: bytes, status: int, text: str
) -> None:
    """Bad JSON, missing text and unknown paths are refused with Slack's words."""
    response = http.post(hook.url + path, content=content)

    assert (response.status_code, response.text) == (status, text)
    assert hook.messages == []


def test_revoked_webhook_answers_invalid_token(hook: FakeSlackWebhook, http: httpx.Client) -> None:
    """After revoke(), every post is 403 `invalid_token`."""
    hook.revoke()

    response = http.post(hook.webhook_url, json={"text": "hello"})

    assert (response.status_code, response.text) == (403, "invalid_token")
    assert hook.messages == []


def test_webhook_canned_answers_then_back_to_normal(
    hook: FakeSlackWebhook, http: httpx.Client
) -> None:
    """Canned answers apply in order for `times` posts (-1: until cleared), then posts land."""
    hook.respond_with(500, "rollup_error", times=2)
    hook.respond_with(503, "later", times=-1)

    statuses = [http.post(hook.webhook_url, json={"text": "x"}).status_code for _ in range(4)]
    hook.clear_responses()
    statuses.append(http.post(hook.webhook_url, json={"text": "x"}).status_code)

    assert statuses == [500, 500, 503, 503, 200]
    assert len(hook.messages) == 1


def test_webhook_on_message_callback(http: httpx.Client) -> None:
    """The callback gets every accepted payload."""
    seen: list[SlackWebhookPost] = []
    with FakeSlackWebhook(on_message=seen.append) as server:
        http.post(server.webhook_url, json={"text": "one"})

    assert [post.payload["text"] for post in seen] == ["one"]


# --- WebhookReceiver ----------------------------------------------------------------------


def signed(body: bytes, secret: str = SECRET, msg_id: str = "evt_1") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        **signature_headers(secret, msg_id, int(NOW.timestamp()), body),
    }


@pytest.mark.parametrize(
    ("receiver_secret", "headers", "valid"),
    [
        (SECRET, signed(b'{"a": 1}'), True),
        (SECRET, signed(b'{"a": 2}'), False),
        (SECRET, {"Content-Type": "application/json"}, False),
        (None, signed(b'{"a": 1}'), None),
    ],
    ids=["valid", "other-body", "unsigned", "no-secret"],
)
def test_receiver_records_and_judges_signatures(
    http: httpx.Client, receiver_secret: str | None, headers: dict[str, str], valid: bool | None
) -> None:
    """Each POST is recorded with its signature verdict (None without a secret) and gets 204."""
    with WebhookReceiver(receiver_secret, now=lambda: NOW) as receiver:
        response = http.post(receiver.url + "/in", content=b'{"a": 1}', headers=headers)
        [request] = receiver.requests

    assert response.status_code == 204
    assert (request.path, request.body, request.json) == ("/in", b'{"a": 1}', {"a": 1})
    assert request.signature_valid is valid
    assert request.status == 204
    assert request.headers["content-type"] == "application/json"


def test_receiver_checks_the_timestamp_with_its_clock(http: httpx.Client) -> None:
    """A signature older than the tolerance is invalid for the receiver's `now`."""
    late = datetime(2026, 1, 2, 4, 0, 0, tzinfo=UTC)
    with WebhookReceiver(SECRET, now=lambda: late) as receiver:
        http.post(receiver.url, content=b"{}", headers=signed(b"{}"))
        [request] = receiver.requests

    assert request.signature_valid is False


def test_receiver_respond_with_counts_down_and_records_the_status(http: httpx.Client) -> None:
    """respond_with answers `times` POSTs with the status, body and headers given."""
    with WebhookReceiver() as receiver:
        receiver.respond_with(429, times=2, body="slow down", headers={"Retry-After": "3"})
        answers = [http.post(receiver.url, content=b"not json") for _ in range(3)]
        requests = receiver.requests

    assert [a.status_code for a in answers] == [429, 429, 204]
    assert (answers[0].text, answers[0].headers["Retry-After"]) == ("slow down", "3")
    assert [r.status for r in requests] == [429, 429, 204]
    assert requests[0].json is None


def test_receiver_redirects_until_cleared(http: httpx.Client) -> None:
    """redirect_to answers 307 with a Location; clear_responses goes back to 204."""
    with WebhookReceiver() as receiver:
        receiver.redirect_to("http://127.0.0.1:9/elsewhere", times=-1)
        first = http.post(receiver.url, content=b"{}")
        second = http.post(receiver.url, content=b"{}")
        receiver.clear_responses()
        third = http.post(receiver.url, content=b"{}")

    assert [r.status_code for r in (first, second, third)] == [307, 307, 204]
    assert first.headers["Location"] == "http://127.0.0.1:9/elsewhere"


def test_receiver_faults_answer_before_recording(http: httpx.Client) -> None:
    """A fault answers the request; the receiver does not record it."""
    with WebhookReceiver() as receiver:
        receiver.faults.add(FaultRule(Fault.HTTP_500))
        response = http.post(receiver.url, content=b"{}")
        requests = receiver.requests

    assert response.status_code == 500
    assert requests == []


def test_receiver_on_message_callback(http: httpx.Client) -> None:
    """The callback gets every received POST."""
    seen: list[ReceivedWebhook] = []
    with WebhookReceiver(on_message=seen.append) as receiver:
        http.post(receiver.url + "/x", content=b"{}")

    assert [r.path for r in seen] == ["/x"]


def test_receiver_refuses_a_malformed_secret_up_front() -> None:
    """A receiver secret that is not whsec_<base64> fails at construction."""
    with pytest.raises(SigningSecretError):
        WebhookReceiver("whsec_***")


def test_receiver_repr_does_not_show_its_secret() -> None:
    """The receiver's repr says whether it verifies, never with which secret."""
    with WebhookReceiver(SECRET) as receiver:
        shown = repr(receiver)

    assert SECRET.removeprefix("whsec_") not in shown
    assert "signed=True" in shown


def test_threads_updates_deletion_permalinks_and_history_with_metadata(
    slack: FakeSlack, http: httpx.Client, clock: ManualClock
) -> None:
    """The calls a live card needs, answered as Slack does, and counted."""
    metadata = {"event_type": "factory_watcher_card", "event_payload": {"card": "m1"}}
    card = post_json(
        http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "card", "metadata": metadata}
    ).json()["ts"]
    clock.advance(2)
    reply = post_json(
        http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "line", "thread_ts": card}
    ).json()
    assert reply["ok"] is True
    assert [p.text for p in slack.replies(CHANNEL, card)] == ["line"]
    assert [p.ts for p in slack.cards] == [card]
    clock.advance(2)
    lost = post_json(
        http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "x", "thread_ts": "9.9"}
    ).json()
    assert lost == {"ok": False, "error": "thread_not_found"}

    history = http.get(
        f"{slack.api_url}conversations.history",
        params={"channel": CHANNEL, "oldest": "0", "include_all_metadata": "true"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert [(m["ts"], m.get("metadata")) for m in history["messages"]] == [(card, metadata)]
    plain = http.get(
        f"{slack.api_url}conversations.history",
        params={"channel": CHANNEL},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert "metadata" not in plain["messages"][0]

    link = http.get(
        f"{slack.api_url}chat.getPermalink",
        params={"channel": CHANNEL, "message_ts": card},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert link["permalink"].startswith("https://fake.slack.test/archives/C0123ABCD/p")

    edited = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": card, "text": "v2"})
    assert edited.json()["ok"] is True
    assert slack.latest(CHANNEL, card) is not None
    slack.delete_message(CHANNEL, card)
    clock.advance(2)
    gone = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": card, "text": "v3"})
    assert gone.json() == {"ok": False, "error": "message_not_found"}
    assert slack.calls("chat.update") == 2
    assert slack.calls("chat.postMessage") == 3
    slack.history_scope = False
    refused = http.get(
        f"{slack.api_url}conversations.history",
        params={"channel": CHANNEL},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert refused == {"ok": False, "error": "missing_scope"}


def test_injected_errors_can_aim_at_one_method(slack: FakeSlack, http: httpx.Client) -> None:
    """An error for chat.update leaves posts alone until an update takes it."""
    slack.inject_error("cant_update_message", method="chat.update")
    ts = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "a"}).json()["ts"]
    refused = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": ts, "text": "b"})
    assert refused.json() == {"ok": False, "error": "cant_update_message"}


def test_updates_and_posts_share_a_channels_pace(
    slack: FakeSlack, http: httpx.Client, clock: ManualClock
) -> None:
    """An update sooner than the interval after a post (or the reverse) is rate-limited."""
    ts = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "v1"}).json()["ts"]
    clock.advance(0.5)
    early = post_json(http, slack, "chat.update", {"channel": CHANNEL, "ts": ts, "text": "v2"})
    assert (early.status_code, early.json()["error"]) == (429, "ratelimited")
    clock.advance(0.5)
    assert post_json(
        http, slack, "chat.update", {"channel": CHANNEL, "ts": ts, "text": "v2"}
    ).json()["ok"]
    clock.advance(0.5)
    soon = post_json(http, slack, "chat.postMessage", {"channel": CHANNEL, "text": "v3"})
    assert soon.status_code == 429
    assert slack.rate_limited == 2
