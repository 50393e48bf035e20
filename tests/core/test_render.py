"""Rendering events into Slack and webhook messages."""

from __future__ import annotations

import json

import pytest

from tests.core.factories import T0, event, ref
from watcher.core.message import SlackMessage, WebhookMessage
from watcher.core.model import EventType
from watcher.core.render import (
    SECTION_TEXT_LIMIT,
    escape_slack,
    format_duration,
    headline,
    render_for,
    render_slack,
    render_webhook,
    truncate,
    webhook_payload,
)
from watcher.core.settings import TargetKind

HOSTILE = "<!channel> <@U1> <https://x|y> & <!subteam^S1> <!here>"


def all_text(message: SlackMessage) -> str:
    """Every string a Slack message would show."""
    return message.text + json.dumps(message.blocks)


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (EventType.DISCOVERED, {}, "Now watching nightly (running)"),
        (
            EventType.STATUS_CHANGED,
            {"from": "running", "to": "idle"},
            "nightly stopped running (running → idle)",
        ),
        (
            EventType.STATUS_CHANGED,
            {"from": "idle", "to": "running"},
            "nightly is now running (was idle)",
        ),
        (
            EventType.COMPLETED,
            {"duration_s": 3725.0, "completed_at": "x"},
            "nightly completed (1h 2m 5s since it was created)",
        ),
        (EventType.MESSAGES_ADDED, {"added": 2, "total": 9}, "nightly: 2 new message(s), 9 in all"),
        (EventType.ARCHIVED, {"archived_at": "x"}, "nightly was archived"),
        (EventType.DELETED, {}, "nightly was deleted"),
        (EventType.API_UNAVAILABLE, {"reason": "HTTP 503"}, "Factory API unavailable: HTTP 503"),
        (EventType.API_RECOVERED, {}, "Factory API reachable again"),
    ],
)
def test_headlines(kind: EventType, data: dict[str, object], expected: str) -> None:
    """Every event type has a plain sentence naming the session and what changed."""
    session = None if kind.startswith("watcher.") else ref()
    assert expected in headline(event(kind, data=data, session=session))


def test_hostile_title_is_inert() -> None:
    """A title full of Slack control syntax cannot mention anyone or forge a link."""
    message = render_slack(event(session=ref(name=None, title=HOSTILE, url="https://a/s1")), "r")
    shown = all_text(message)
    for raw in ("<!channel>", "<@U1>", "<https://x|y>", "<!subteam", "<!here>"):
        assert raw not in shown
    assert "&lt;!channel&gt;" in message.text
    assert "<https://a/s1|" in shown  # our own link stays a link


def test_slack_message_has_text_fallback_and_blocks() -> None:
    """Blocks carry the headline and facts; `text` is the plain fallback."""
    message = render_slack(event(session=ref(url="https://app/s1")), "finished")
    assert message.text.startswith(":pause_button:")
    assert message.blocks[0]["text"]["text"] == message.text
    facts = message.blocks[1]["elements"][0]["text"]
    assert "<https://app/s1|nightly>" in facts
    assert "*Title:* Refactor billing" in facts
    assert "rule finished" in message.blocks[2]["elements"][0]["text"]


def test_long_titles_are_capped() -> None:
    """A huge title is cut with an ellipsis and every block stays within Slack's limits."""
    message = render_slack(event(session=ref(name=None, title="x" * 50_000)), "r")
    assert "…" in message.text
    assert len(message.text) < SECTION_TEXT_LIMIT
    for block in message.blocks:
        assert len(json.dumps(block)) < SECTION_TEXT_LIMIT + 200


def test_newlines_in_titles_do_not_break_lines() -> None:
    """Untrusted text is folded onto one line."""
    message = render_slack(event(session=ref(name="a\n\n*b*\tc")), "r")
    assert "a *b* c" in message.text


def test_webhook_body_contract() -> None:
    """The webhook body has exactly the documented keys; its id is the event id."""
    the_event = event(session=ref(url="https://app/s1"), sequence=1)
    message = render_webhook(the_event, "finished")
    body = json.loads(message.body)
    assert set(body) == {
        "version",
        "type",
        "id",
        "sequence",
        "occurred_at",
        "rule",
        "session",
        "data",
    }
    assert (body["version"], body["sequence"]) == (1, 1)
    assert body["type"] == "session.status_changed"
    assert body["id"] == message.id == "evt_1"
    assert body["occurred_at"] == "2026-11-28T12:00:00Z"
    assert body["session"]["labels"] == {"team": "platform"}
    assert body["data"] == {"from": "running", "to": "idle"}
    assert message.occurred_at == T0


def test_webhook_body_keeps_text_verbatim_in_utf8() -> None:
    """Webhooks get raw UTF-8 text, not Slack escaping."""
    body = render_webhook(event(session=ref(title="ünïcode <b>")), "r").body
    assert "ünïcode <b>".encode() in body
    assert webhook_payload(event(EventType.API_RECOVERED, session=None), "r")["session"] is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TargetKind.SLACK, SlackMessage),
        (TargetKind.SLACK_WEBHOOK, SlackMessage),
        (TargetKind.WEBHOOK, WebhookMessage),
    ],
)
def test_render_for_each_target_kind(kind: TargetKind, expected: type) -> None:
    """Each target kind gets the message type its notifier sends."""
    assert isinstance(render_for(kind, event(), "r"), expected)


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0, "0s"), (59.6, "1m 0s"), (61, "1m 1s"), (3600, "1h 0m 0s")]
)
def test_format_duration(seconds: float, expected: str) -> None:
    """Durations read like a person would say them."""
    assert format_duration(seconds) == expected


def test_escape_and_truncate() -> None:
    """Escaping covers &, < and >; truncation marks the cut."""
    assert escape_slack("a&b<c>") == "a&amp;b&lt;c&gt;"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"


def test_watcher_events_render_without_session_facts() -> None:
    """API health messages have the headline and the rule, no session block."""
    message = render_slack(
        event(EventType.API_UNAVAILABLE, session=None, data={"reason": "HTTP 503"}), "outage"
    )
    assert len(message.blocks) == 2
    assert "rule outage" in message.blocks[1]["elements"][0]["text"]
