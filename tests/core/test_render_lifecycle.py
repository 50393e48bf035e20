"""Headlines and digests for the semantic events of agent sessions."""

from __future__ import annotations

import json
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


def test_digest_lists_the_held_notifications_in_order() -> None:
    """A digest's Slack message lists every held headline in order; its webhook carries items."""
    first = Event("evt_a", EventType.FINISHED, T0, ref(title="<!channel>", name=None), {})
    second = Event("evt_b", EventType.STUCK, T0 + timedelta(minutes=3), ref(), {"for_s": 900})
    digest = digest_event("t", "night", T0 + timedelta(hours=8), [(first, "done"), (second, "s")])
    message = render_slack(digest, "quiet_hours:night")
    assert message.text.splitlines() == [
        ":zzz: Quiet hours night are over: 2 notification(s) held",
        "• 12:00 UTC :checkered_flag: &lt;!channel&gt; finished",
        "• 12:03 UTC :warning: nightly has made no progress for 15m",
    ]
    assert "<!channel>" not in json.dumps(message.blocks)
    body = json.loads(render_webhook(digest, "quiet_hours:night").body)
    assert body["type"] == "watcher.digest"
    assert [(i["id"], i["rule"]) for i in body["data"]["items"]] == [
        ("evt_a", "done"),
        ("evt_b", "s"),
    ]


def test_a_long_digest_is_cut_for_slack_but_not_for_webhooks() -> None:
    """Slack shows the first 40 items and a count of the rest; the webhook lists them all."""
    items = [
        (Event(f"evt_{n}", EventType.FINISHED, T0 + timedelta(minutes=n), ref(), {}), "done")
        for n in range(100)
    ]
    digest = digest_event("t", "night", T0 + timedelta(hours=9), items)
    lines = render_slack(digest, "quiet_hours:night").text.splitlines()
    assert len(lines) == 1 + 40 + 1
    assert lines[-1] == "… and 60 more"
    assert len(json.loads(render_webhook(digest, "r").body)["data"]["items"]) == 100
