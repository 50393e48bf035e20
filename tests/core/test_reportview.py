"""A report shown to people: one Slack message within limits, plain text for a terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.core.reportsim import END, URL, History
from watcher.core.message import SlackMessage
from watcher.core.model import EventType
from watcher.core.render import SECTION_TEXT_LIMIT, headline, render_for, render_slack
from watcher.core.report import report_event
from watcher.core.reportview import (
    FALLBACK_TEXT_LIMIT,
    LISTED_PER_SECTION,
    report_text,
)
from watcher.core.secret import Secret
from watcher.core.settings import (
    FactorySettings,
    ReportSpec,
    Settings,
    SlackTemplate,
    SlackWebhookTarget,
    TargetKind,
    WebhookTarget,
)
from watcher.core.template import template_for

HOSTILE = "<!channel> & <@U1>"
SPEC = ReportSpec("daily", "0 9 * * *", "Europe/Berlin")


def _many_finished(n: int) -> History:
    """`n` sessions each finishing one run in the window, session i using i credits."""
    h = History()
    for i in range(n):
        sid = f"s{i:03d}"
        h.poll(30, sid, "idle", created=0, credits=0)
        h.poll(120, sid, "running")
        h.poll(180, sid, "idle", completed=179, credits=i)
    return h


def _slack(h: History, spec: ReportSpec = SPEC) -> SlackMessage:
    message = render_slack(report_event(spec, h.report(spec), END), "report:daily")
    assert isinstance(message, SlackMessage)
    return message


def _section_texts(message: SlackMessage) -> list[str]:
    return [b["text"]["text"] for b in message.blocks if b["type"] == "section"]


def test_a_report_is_one_message_with_a_section_per_kind() -> None:
    """Headline, then Finished, Started, Completed, runs and use as sections; linked names."""
    h = _many_finished(3)
    message = _slack(h)
    texts = _section_texts(message)
    assert texts[0].startswith(":bar_chart: *daily*: 3 finished, 3 started, 3 credits")
    assert "(Europe/Berlin)" in texts[0]
    titles = [t.split("\n", 1)[0] for t in texts[1:]]
    assert titles == [
        "*Started (3)*",
        "*Finished (3)*",
        "*Completed (3)*",
        "*Longest runs*",
        "*Use*",
        "*Most credits*",
    ]
    assert f"<{URL.replace('{id}', 's000')}|task-s000>" in texts[2]
    assert message.text.startswith(":bar_chart: *daily*: 3 finished")
    assert len(message.blocks) <= 50


def test_a_long_list_ends_with_and_n_more() -> None:
    """Forty finished sessions: ten listed per section, then '… and 30 more'; the fallback
    text names five and counts the rest."""
    message = _slack(_many_finished(40))
    finished = next(t for t in _section_texts(message) if t.startswith("*Finished (40)*"))
    bullets = [line for line in finished.splitlines() if line.startswith("• ")]
    assert len(bullets) == LISTED_PER_SECTION + 1
    assert bullets[-1] == "• … and 30 more"
    assert "Finished (40): " in message.text
    assert re.search(r"Finished \(40\): [^\n]* … and 35 more", message.text)


def test_every_text_stays_within_slacks_limits_however_long_the_names() -> None:
    """Sections within 3000 characters and the fallback within its cap, with long names."""
    h = History()
    for i in range(150):
        sid = f"s{i:03d}-" + "x" * 120
        h.poll(30, sid, "idle", created=0)
        h.poll(120, sid, "running")
        h.poll(180, sid, "idle", completed=179)
    message = _slack(h)
    assert all(len(t) <= SECTION_TEXT_LIMIT for t in _section_texts(message))
    assert len(message.text) <= FALLBACK_TEXT_LIMIT
    finished = next(t for t in _section_texts(message) if t.startswith("*Finished (150)*"))
    assert finished.endswith("more")
    # The document lists at most 100; the count still says 150 and the rest are counted.
    more = int(finished.rsplit("and ", 1)[1].split()[0])
    shown = len([x for x in finished.splitlines() if x.startswith("• <")])
    assert shown + more == 150


def test_names_from_sessions_cannot_ping_a_channel() -> None:
    """A hostile title is escaped in blocks and fallback alike."""
    h = History()
    h.poll(30, "a", "idle", created=0, title=HOSTILE)
    h.poll(180, "a", "pending")
    spec = ReportSpec(HOSTILE, "0 9 * * *")
    message = _slack(h, spec)
    shown = message.text + json.dumps(message.blocks)
    assert "<!channel>" not in shown
    assert "<@U1>" not in shown
    assert "&lt;!channel&gt;" in shown


def test_nothing_happened_is_one_line() -> None:
    """An empty report is a headline saying nothing happened, and nothing else but context."""
    message = _slack(History())
    assert message.text.startswith(":bar_chart: *daily*: nothing happened ·")
    assert "\n" not in message.text
    assert [b["type"] for b in message.blocks] == ["section", "context"]


def test_group_by_adds_a_section_per_label_value() -> None:
    """With group_by, a section lists each value's counts, sessions without the label last;
    a session's label is the one its latest event carries (s000 is labelled from 3:20)."""
    h = _many_finished(3)
    h.labels = {"s000": {"team": "web"}}
    h.poll(200, "s000", "running")
    spec = ReportSpec("daily", "0 9 * * *", group_by="team")
    texts = _section_texts(_slack(h, spec))
    by = next(t for t in texts if t.startswith("*By team*"))
    assert by.splitlines()[1:] == [
        "• web: 1 finished, 1 stuck now, 1 started",
        "• (no label): 2 finished, 2 started, 3 credits",
    ]


def test_the_headline_and_webhook_use_the_report() -> None:
    """`headline` (templates' `headline`) and webhook rendering know report events."""
    h = _many_finished(2)
    event = report_event(SPEC, h.report(SPEC), END)
    assert headline(event).startswith(":bar_chart: *daily*: 2 finished")
    body: dict[str, Any] = json.loads(render_for(TargetKind.WEBHOOK, event, "report:daily").body)  # type: ignore[union-attr]
    assert (body["type"], body["rule"], body["session"]) == ("report", "report:daily", None)
    assert body["data"] == json.loads(json.dumps(event.data))
    assert event.type is EventType.REPORT


def test_plain_text_lists_everything_with_links() -> None:
    """`report NAME` prints every listed session with its link, and the rest counted."""
    text = report_text(_many_finished(12).report(SPEC).document)
    lines = text.splitlines()
    assert lines[0] == "Report daily: 12 finished, 12 started, 66 credits"
    assert lines[1].startswith("Window: ")
    assert "Finished (12):" in lines
    assert f"  - task-s011 ({URL.replace('{id}', 's011')})" in lines


def test_a_reports_own_template_is_picked_by_its_rows_rule_name() -> None:
    """`report:NAME` (or the bare name) picks the report's template for a target of its
    kind; a target's own default template is never used for a report."""
    mine = SlackTemplate(text="{{ data.report }}")
    slack = SlackWebhookTarget(
        "ops", Secret("https://hooks.slack.com/x"), template=SlackTemplate("t")
    )
    hook = WebhookTarget("ci", "https://example.invalid/x")
    settings = Settings(
        factory=FactorySettings(api_key=Secret("fk-x")),
        state_path=Path("state.db"),
        targets={"ops": slack, "ci": hook},
        reports=(ReportSpec("daily", "0 9 * * *", notify=("ops",), template=mine),),
    )
    assert template_for(settings, slack, "report:daily", EventType.REPORT) == mine
    assert template_for(settings, slack, "daily", EventType.REPORT) == mine
    assert template_for(settings, hook, "report:daily", EventType.REPORT) is None
    assert template_for(settings, slack, "report:other", EventType.REPORT) is None
