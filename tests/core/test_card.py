"""The live card's content and its thread lines."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from tests.core.factories import T0, event, ref
from watcher.core.card import EarlierCard, render_card, run_line, status_label, thread_line
from watcher.core.message import SlackMessage
from watcher.core.model import EventType, SessionRef, TokenUsage

RUN = {
    "started_at": (T0 - timedelta(minutes=10)).isoformat(),
    "ended_at": T0.isoformat(),
    "duration_s": 600,
    "active_s": 240,
    "active_share": 0.4,
    "tokens": {"input": 2000, "output": 1500, "cache": 300},
    "credits": 4.5,
    "messages_added": 7,
    "partial": False,
}
FULL = ref(
    url="https://app.factory.ai/sessions/s1",
    status="idle",
    created_at=T0 - timedelta(hours=1, minutes=2, seconds=5),
    message_count=17,
    active_ms=300_000,
    usage=TokenUsage(3000, 2000, 100, 400, 0, 6.25),
    model="claude-opus",
)


def shown(message: SlackMessage) -> str:
    """Everything the card shows, text and blocks."""
    return message.text + "\n" + json.dumps(message.blocks, ensure_ascii=False)


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        (EventType.STATUS_CHANGED, "running", ":large_green_circle: running"),
        (EventType.STATUS_CHANGED, "pending", ":hourglass_flowing_sand: pending"),
        (EventType.FINISHED, "idle", ":large_blue_circle: idle"),
        (EventType.STATUS_CHANGED, "hibernating", ":grey_question: hibernating"),
        (EventType.STATUS_CHANGED, "<!channel>", ":grey_question: &lt;!channel&gt;"),
        (EventType.ARCHIVED, "idle", ":file_cabinet: archived"),
        (EventType.DELETED, "idle", ":wastebasket: deleted"),
    ],
)
def test_status_label(kind: EventType, status: str, expected: str) -> None:
    """The status with its emoji; archived and deleted say so; unknown text is escaped."""
    assert status_label(event(kind, session=ref(status=status))) == expected


def test_card_shows_the_session_figures() -> None:
    """Title link, status, headline, elapsed and active time, messages, tokens, credits, model."""
    card = render_card(event(session=FULL), "story")
    text = shown(card)
    for fact in (
        "<https://app.factory.ai/sessions/s1|nightly>",
        ":large_blue_circle: idle",
        "stopped running",
        "*Elapsed*\\n1h 2m 5s",
        "*Active*\\n5m 0s",
        "*Messages*\\n17",
        "*Tokens*\\n3,000 in / 2,000 out / 500 cache",
        "*Credits*\\n6.25",
        "*Model*\\nclaude-opus",
        "rule story",
    ):
        assert fact in text
    assert card.text.startswith(":pause_button: nightly stopped running")
    assert "This run" not in text


@pytest.mark.parametrize("kind", [EventType.FINISHED, EventType.INTERRUPTED, EventType.COMPLETED])
def test_a_run_end_shows_the_run_summary(kind: EventType) -> None:
    """Finished, interrupted and completed cards and lines tell what the run took."""
    ended = event(kind, session=FULL, data={"run": RUN, "duration_s": 3725.0})
    summary = (
        "took 10m 0s, active 4m 0s (40% of it), tokens 2,000 in / 1,500 out / 300 cache,"
        " 4.5 credits, 7 new message(s)"
    )
    assert summary in shown(render_card(ended, "r"))
    assert "*This run:*" in shown(render_card(ended, "r"))
    assert summary in thread_line(ended)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (RUN, "took 10m 0s, active 4m 0s (40% of it)"),
        ({**RUN, "duration_s": None, "active_share": None}, "active 4m 0s, tokens"),
        ({**RUN, "tokens": None, "credits": None}, "(40% of it), 7 new message(s)"),
        ({**RUN, "partial": True}, "counted from when the watcher first saw it"),
        ({"messages_added": 0}, "0 new message(s)"),
    ],
)
def test_run_line(run: dict[str, Any], expected: str) -> None:
    """Whatever the summary knows is said; what it does not know is left out."""
    assert expected in run_line(run)


@pytest.mark.parametrize(
    "title", ["<!channel> go", "hi <@U123>", "<!subteam^S1>", "<https://evil.example|ok>", "a & b"]
)
def test_untrusted_text_stays_inert(title: str) -> None:
    """Title, model and the agent's answer are escaped in the card, its text and thread line."""
    session = replace(FULL, name=None, title=title, model=f"model {title}")
    answered = event(EventType.FINISHED, session=session, data={"last_answer": f"{title}\nbye"})
    outputs = [shown(render_card(answered, "r")), thread_line(answered)]
    for text in outputs:
        for trigger in ("<!", "<@", "<https://evil"):
            assert trigger not in text
    assert "&lt;" in outputs[0] or "&amp;" in outputs[0]


def test_last_answer_is_quoted_and_shortened() -> None:
    """The agent's answer, when the data carries one, is quoted and capped."""
    long = "line one\n" + "x" * 5000
    card = render_card(event(session=FULL, data={"last_answer": long}), "r")
    answer = [b for b in card.blocks if "Last answer" in json.dumps(b)]
    assert len(answer) == 1
    assert "> line one" in answer[0]["text"]["text"]
    assert len(answer[0]["text"]["text"]) <= 3000


def test_earlier_card_is_linked_when_slack_gave_a_link() -> None:
    """A replacement card names the one it replaces, with its permalink when known."""
    linked = EarlierCard("1.2", "https://x.slack.com/archives/C1/p12", "cant_update_message")
    card = shown(render_card(event(session=FULL), "r", linked))
    assert "replaces an <https://x.slack.com/archives/C1/p12|earlier card>" in card
    assert "cant_update_message" in card
    bare = shown(render_card(event(session=FULL), "r", replace(linked, url=None)))
    assert "replaces an earlier card (cant_update_message)" in bare


def test_a_bare_session_still_renders() -> None:
    """A ref with no figures (an event stored before cards) renders without them."""
    card = render_card(event(session=SessionRef(id="s9")), "r")
    assert "Elapsed" not in shown(card)
    assert "s9" in card.text


def test_thread_line_is_one_short_line() -> None:
    """Time and headline, on one line, capped."""
    line = thread_line(event(session=replace(FULL, name="n" * 1000)))
    assert line.startswith("12:00:00 UTC · :pause_button:")
    assert "\n" not in line
    assert len(line) <= 600
