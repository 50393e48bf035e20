"""What `doctor` asks of the fakes: Slack scopes, channels and membership; refused API keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from watcher.testing.sim import FORBIDDEN_DETAIL, FactorySimulator, InvalidRequestError
from watcher.testing.sinks import FakeSlack
from watcher.testing.slackaccess import APP_SCOPES

TOKEN = "xoxb-test"
CHANNEL = "C0123ABCD"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(TOKEN, (CHANNEL,), min_interval_s=0) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def call(http: httpx.Client, slack: FakeSlack, method: str, **body: Any) -> httpx.Response:
    """One Web API call with the fake's token."""
    return http.post(
        f"{slack.api_url}{method}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )


def test_auth_test_lists_the_manifest_scopes_by_default(
    slack: FakeSlack, http: httpx.Client
) -> None:
    """auth.test answers ok with an x-oauth-scopes header holding the app's scopes."""
    answer = call(http, slack, "auth.test")
    assert answer.json()["ok"] is True
    assert set(answer.headers["x-oauth-scopes"].split(",")) == set(APP_SCOPES)


def test_set_scopes_changes_the_header_and_refuses_posts_without_chat_write(
    slack: FakeSlack, http: httpx.Client
) -> None:
    """Without chat:write a post is `missing_scope`, and the header says what the token has."""
    slack.set_scopes("channels:read")
    assert call(http, slack, "auth.test").headers["x-oauth-scopes"] == "channels:read"
    posted = call(http, slack, "chat.postMessage", channel=CHANNEL, text="hi").json()
    assert posted == {"ok": False, "error": "missing_scope"}
    assert slack.messages == []


@pytest.mark.parametrize(
    ("member", "private", "scopes", "info_error", "post_error"),
    [
        (True, False, APP_SCOPES, None, None),
        (False, False, APP_SCOPES, None, None),  # chat:write.public posts without joining
        (False, False, ("chat:write", "channels:read"), None, "not_in_channel"),
        (True, True, APP_SCOPES, None, None),
        (False, True, APP_SCOPES, "channel_not_found", "channel_not_found"),
        (True, False, ("chat:write",), "missing_scope", None),
        (True, True, ("chat:write", "channels:read"), "missing_scope", None),
    ],
)
def test_conversations_info_and_posting_follow_membership_privacy_and_scopes(
    slack: FakeSlack,
    http: httpx.Client,
    member: bool,
    private: bool,
    scopes: tuple[str, ...],
    info_error: str | None,
    post_error: str | None,
) -> None:
    """conversations.info and chat.postMessage answer as Slack does for the bot's access."""
    slack.set_channel(CHANNEL, member=member, private=private)
    slack.set_scopes(*scopes)
    info = call(http, slack, "conversations.info", channel=CHANNEL).json()
    if info_error is None:
        assert info["channel"]["is_member"] is member
        assert info["channel"]["is_private"] is private
    else:
        assert info == {"ok": False, "error": info_error}
    posted = call(http, slack, "chat.postMessage", channel=CHANNEL, text="hi").json()
    assert posted.get("error") == post_error


def test_conversations_info_reports_unknown_and_archived_channels(
    slack: FakeSlack, http: httpx.Client
) -> None:
    """An unknown channel is `channel_not_found`; an archived one says `is_archived`."""
    assert call(http, slack, "conversations.info", channel="C0NOPE").json()["error"] == (
        "channel_not_found"
    )
    slack.set_channel_archived(CHANNEL)
    assert call(http, slack, "conversations.info", channel=CHANNEL).json()["channel"]["is_archived"]


def test_a_refused_key_gets_its_status_and_detail_and_others_are_unaffected() -> None:
    """refuse_key answers that key's requests with the status; the accepted key still works."""
    with FactorySimulator("fk-good") as sim, httpx.Client(timeout=5) as http:
        sim.refuse_key("fk-member")
        sim.refuse_key("fk-gone", 401, "revoked")

        def status(key: str) -> tuple[int, str | None]:
            answer = http.get(
                f"{sim.url}/api/v0/sessions", headers={"Authorization": f"Bearer {key}"}
            )
            return answer.status_code, answer.json().get("detail")

        assert status("fk-member") == (403, FORBIDDEN_DETAIL)
        assert status("fk-gone") == (401, "revoked")
        assert status("fk-good")[0] == 200
        with pytest.raises(InvalidRequestError):
            sim.refuse_key("fk-x", 500)
