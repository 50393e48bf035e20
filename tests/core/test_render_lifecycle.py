"""Headlines and digests for the semantic events of agent sessions."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref
from watcher.core.model import Event, EventType
from watcher.core.render import headline, render_slack, render_webhook, short_duration
from watcher.core.rulestate import digest_event


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        (EventType.STARTED, {}, "nightly started running"),
        (EventType.FINISHED, {"between_polls": False}, "nightly finished"),
        (
            EventType.FINISHED,
            {"between_polls": True},
            "nightly finished (the whole run happened between two polls)",
        ),
        (EventType.INTERRUPTED, {}, "nightly was interrupted"),
        (EventType.STUCK, {"for_s": 900}, "nightly has made no progress for 15m"),
        (EventType.STUCK, {"for_s": 2700, "reminder": 1}, "no progress for 45m (reminder)"),
        (
            EventType.STUCK,
            {"resolved": True, "lasted_s": 1260},
            "nightly is making progress again (stuck for 21m)",
        ),
        (EventType.WAITING, {"for_s": 300}, "nightly has been waiting for 5m"),
        (
            EventType.WAITING,
            {"resolved": True, "lasted_s": 400},
            "no longer waiting (waited 6m 40s)",
        ),
        (EventType.LONG_RUNNING, {"for_s": 7200}, "nightly has been running for 2h"),
        (
            EventType.USAGE_CROSSED,
            {"counter": "factory_credits", "threshold": 100.0, "value": 101.5},
            "nightly crossed 100 credits (now 101.5)",
        ),
        (
            EventType.USAGE_CROSSED,
            {"counter": "total_tokens", "threshold": 1e6, "value": 1000200},
            "crossed 1,000,000 tokens in all (now 1,000,200)",
        ),
    ],
)
def test_semantic_headlines(kind: EventType, data: dict[str, object], expected: str) -> None:
    """Each semantic event says what happened in the words people use for agents."""
    assert expected in headline(event(kind, data=data))


def test_short_duration() -> None:
    """Zero units are left out."""
    assert [short_duration(s) for s in (0, 59, 900, 5400, 3725)] == [
        "0s",
        "59s",
        "15m",
        "1h 30m",
        "1h 2m 5s",
    ]


def test_digest_lists_the_held_notifications_grouped_by_session() -> None:
    """A digest's Slack message groups held headlines by session, in order, escaped."""
    first = Event("evt_a", EventType.FINISHED, T0, ref(title="<!channel>", name=None), {})
    other = Event("evt_o", EventType.WAITING, T0 + timedelta(minutes=1), ref(id="s2"), {})
    second = Event("evt_b", EventType.STUCK, T0 + timedelta(minutes=3), ref(), {"for_s": 900})
    items = [(first, "done"), (other, "w"), (second, "s")]
    digest = digest_event("t", "night", T0 + timedelta(hours=8), items)
    message = render_slack(digest, "quiet_hours:night")
    assert message.text.splitlines() == [
        ":zzz: Quiet hours night are over: 3 notification(s) held",
        "*&lt;!channel&gt;* (2)",
        "• 12:00 UTC :checkered_flag: &lt;!channel&gt; finished",
        "• 12:03 UTC :warning: nightly has made no progress for 15m",
        "*nightly* (1)",
        "• 12:01 UTC :hourglass: nightly has been waiting for 0s",
    ]
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert len(sections) == 3  # the headline, then one section per session
    assert "<!channel>" not in json.dumps(message.blocks)


def test_a_digest_links_each_session_in_its_blocks_escaped_as_elsewhere() -> None:
    """Each session's heading in the blocks links to it; text and link parts stay escaped."""
    url = "https://app.factory.ai/sessions/s1?a=1&b=<x>"
    first = Event("evt_a", EventType.FINISHED, T0, ref(title="<!channel>", name=None, url=url), {})
    bare = Event("evt_o", EventType.WAITING, T0, ref(id="s2", url=None), {})
    digest = digest_event("t", "night", T0 + timedelta(hours=8), [(first, "d"), (bare, "w")])
    message = render_slack(digest, "quiet_hours:night")
    sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
    assert [s.splitlines()[0] for s in sections[1:]] == [
        "*<https://app.factory.ai/sessions/s1?a=1&amp;b=&lt;x&gt;|&lt;!channel&gt;>* (1)",
        "*nightly* (1)",
    ]
    assert message.text.splitlines()[1] == "*&lt;!channel&gt;* (1)"  # the fallback: no link


def test_a_digest_webhook_body_lists_the_events_with_their_own_sequences() -> None:
    """One body of type digest lists every held event as an event body of its own."""
    first = Event("evt_a", EventType.FINISHED, T0, ref(), {"duration_s": 5.0}, sequence=4)
    second = Event("evt_b", EventType.STUCK, T0 + timedelta(minutes=3), ref(), {}, sequence=5)
    digest = replace(
        digest_event("t", "night", T0 + timedelta(hours=8), [(first, "done"), (second, "s")]),
        sequence=9,
    )
    body = json.loads(render_webhook(digest, "quiet_hours:night").body)
    assert (body["version"], body["type"], body["sequence"]) == (1, "digest", 9)
    assert body["data"] == {"window": "night", "count": 2}
    assert [(e["id"], e["rule"], e["sequence"], e["version"]) for e in body["events"]] == [
        ("evt_a", "done", 4, 1),
        ("evt_b", "s", 5, 1),
    ]
    assert body["events"][0]["session"]["labels"] == {"team": "platform"}


def test_a_long_digest_is_cut_for_slack_but_not_for_webhooks() -> None:
    """Slack shows five lines per session and a count; the webhook body lists every event."""
    items = [
        (Event(f"evt_{n}", EventType.FINISHED, T0 + timedelta(minutes=n), ref(), {}), "done")
        for n in range(100)
    ]
    digest = digest_event("t", "night", T0 + timedelta(hours=9), items)
    lines = render_slack(digest, "quiet_hours:night").text.splitlines()
    assert len(lines) == 1 + 1 + 5 + 1
    assert lines[1] == "*nightly* (100)"
    assert lines[-1] == "• … and 95 more"
    assert len(json.loads(render_webhook(digest, "r").body)["events"]) == 100


def test_a_digest_of_many_sessions_stays_within_slack_block_limits() -> None:
    """Beyond 40 sessions, the Slack message counts the rest; blocks stay under 50."""
    items = [
        (Event(f"evt_{n}", EventType.FINISHED, T0, ref(id=f"s{n}", name=f"n{n}"), {}), "done")
        for n in range(60)
    ]
    message = render_slack(digest_event("t", "night", T0 + timedelta(hours=9), items), "r")
    assert len(message.blocks) <= 50
    assert "… and 20 more sessions" in json.dumps(message.blocks, ensure_ascii=False)
