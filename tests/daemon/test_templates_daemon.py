"""Templates and the last answer through the real daemon path, over loopback HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tests.rig import CHANNEL, Rig, running_rig
from watcher.core.settings import Rule, SlackTemplate, WebhookTemplate
from watcher.daemon import Watcher
from watcher.testing.fakehttp import Fault, FaultRule

HOSTILE = "<!channel> <@U123> & co"
SLACK_TEMPLATE = SlackTemplate(
    text="{{ session.title }} finished in {{ durations.duration }}",
    blocks=json.dumps(
        [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*{{ session.title }}*"}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "{{ last_answer if last_answer else 'no answer' }}",
                },
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "seq {{ sequence }}"}]},
        ]
    ),
)
BODY_TEMPLATE = WebhookTemplate(
    body='{"who": {{ session.title }}, "answer": {{ last_answer }},\n'
    ' "took": {{ durations.duration }}}'
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def rules(*, answer: bool, slack: SlackTemplate | None = SLACK_TEMPLATE) -> tuple[Rule, ...]:
    """A Slack rule on finished and a webhook rule on completed, maybe with the last answer."""
    return (
        Rule(
            name="done",
            on=("session.finished",),
            notify=("team-slack",),
            template=slack,
            include_last_answer=answer,
        ),
        Rule(
            name="hook",
            on=("session.completed",),
            notify=("ci",),
            template=BODY_TEMPLATE,
            include_last_answer=answer,
        ),
    )


async def finish_one_run(rig: Rig, watcher: Watcher) -> None:
    """Discover s1 running, complete its run, deliver what that sends."""
    with anyio.fail_after(30):  # a hang guard, not a timing assertion
        await watcher.poll_all()
        await watcher.deliver_due()
        rig.sim.complete_run("s1")
        await watcher.poll_all()
        await watcher.deliver_due()


async def run_watcher(
    rig: Rig, settings_rules: tuple[Rule, ...], answer_timeout: timedelta | None = None
) -> Watcher:
    """A watcher over s1 (titled HOSTILE) that has run one session to completion."""
    settings = replace(rig.with_sessions("s1"), rules=settings_rules)
    rig.sim.update("s1", title=HOSTILE)
    watcher = Watcher(settings)
    if answer_timeout is not None:
        watcher.answers.timeout = answer_timeout
    try:
        await finish_one_run(rig, watcher)
    finally:
        await watcher.aclose()
        watcher.store.close()
    return watcher


@pytest.mark.anyio
async def test_a_templated_slack_message_reaches_slack_with_the_title_inert(rig: Rig) -> None:
    """The template's text and blocks arrive; `<!channel>` and `<@U123>` stay text."""
    await run_watcher(rig, rules(answer=False))
    [message] = rig.slack.messages
    assert message.channel == CHANNEL
    assert (
        message.text
        == "&lt;!channel&gt; &lt;@U123&gt; &amp; co finished in "
        + (message.text.split(" finished in ")[1])
    )
    shown = message.text + json.dumps(message.blocks)
    assert "<!channel>" not in shown
    assert "<@U123>" not in shown
    assert message.blocks[0]["text"]["text"] == "*&lt;!channel&gt; &lt;@U123&gt; &amp; co*"
    assert message.blocks[1]["text"]["text"] == "no answer"
    assert message.blocks[2]["elements"][0]["text"].startswith("seq ")


@pytest.mark.anyio
async def test_a_templated_webhook_body_reaches_the_receiver_signed(rig: Rig) -> None:
    """The body is the template's object plus version, type, id and sequence; signed."""
    await run_watcher(rig, rules(answer=False))
    [received] = [r for r in rig.receiver.requests if r.status < 300]
    assert received.signature_valid
    body = received.json
    assert body["version"] == 1
    assert body["type"] == "session.completed"
    assert body["id"] == received.headers["webhook-id"]
    assert body["sequence"] >= 1
    assert body["template"] is True
    assert body["who"] == HOSTILE  # JSON carries the title as data, unescaped and inert
    assert body["answer"] is None
    assert body["took"].endswith("s")


@pytest.mark.anyio
async def test_the_last_answer_reaches_slack_escaped_and_the_webhook_as_data(rig: Rig) -> None:
    """include_last_answer reads /messages once per event and every renderer shows it."""
    rig.sim.add_message("s1", "still working", phase="commentary")
    rig.sim.add_message("s1", "Done <!here>: fixed & tested")
    await run_watcher(rig, rules(answer=True))
    [message] = rig.slack.messages
    assert message.blocks[1]["text"]["text"] == "Done &lt;!here&gt;: fixed &amp; tested"
    [received] = [r for r in rig.receiver.requests if r.status < 300]
    assert received.json["answer"] == "Done <!here>: fixed & tested"
    assert rig.sim.path_request_count("/api/v0/sessions/s1/messages") == 2  # one per event


@pytest.mark.anyio
async def test_the_builtin_slack_message_quotes_the_last_answer_escaped(rig: Rig) -> None:
    """Without a template, the built-in Slack message shows the answer, escaped."""
    rig.sim.add_message("s1", "All green <@U999>")
    await run_watcher(rig, rules(answer=True, slack=None))
    [message] = rig.slack.messages
    shown = json.dumps(message.blocks)
    assert "Last answer" in shown
    assert "All green &lt;@U999&gt;" in shown
    assert "<@U999>" not in shown


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault", [Fault.HTTP_500, Fault.HTTP_429_RETRY_AFTER, Fault.STALL, Fault.RESET, Fault.GARBAGE]
)
async def test_a_failing_messages_endpoint_never_holds_the_notification(
    rig: Rig, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors, garbage and a stalled /messages: the notifications go out without the answer."""
    rig.sim.add_message("s1", "never seen")
    rig.sim.faults.add(
        FaultRule(fault, path_prefix="/api/v0/sessions/s1/messages", times=-1, stall_seconds=30)
    )
    with caplog.at_level(logging.WARNING, logger="watcher.delivery"):
        await run_watcher(rig, rules(answer=True), answer_timeout=timedelta(milliseconds=300))
    [message] = rig.slack.messages
    assert message.blocks[1]["text"]["text"] == "no answer"
    [received] = [r for r in rig.receiver.requests if r.status < 300]
    assert received.json["answer"] is None
    assert "no last answer for s1" in caplog.text


@pytest.mark.anyio
async def test_a_template_failing_at_send_time_sends_the_builtin_message(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Data no sample had: the built-in message goes out and a warning says why."""
    surprising = SlackTemplate(text="{{ data.only_in_tests }}")
    with caplog.at_level(logging.WARNING, logger="watcher.delivery"):
        await run_watcher(rig, rules(answer=False, slack=surprising))
    [message] = rig.slack.messages
    assert "finished" in message.text
    assert "&lt;!channel&gt;" in message.text
    assert "template for team-slack (rule done) failed" in caplog.text


@pytest.mark.anyio
async def test_a_slack_webhook_target_uses_its_own_default_template(rig: Rig) -> None:
    """A target's template applies to rules without one, through the incoming webhook."""
    ops = rig.settings.targets["ops"]
    default = SlackTemplate(text="{% if session %}{{ session.title }}: {% endif %}{{ headline }}")
    rig.settings = replace(
        rig.settings, targets={**rig.settings.targets, "ops": replace(ops, template=default)}
    )
    plain = Rule(name="plain", on=("session.finished",), notify=("ops",))
    await run_watcher(rig, (plain,))
    [posted] = rig.slack_hook.messages
    assert posted.payload["text"].startswith("&lt;!channel&gt; &lt;@U123&gt; &amp; co: ")
    assert "finished" in posted.payload["text"]
    assert "<!channel>" not in json.dumps(posted.payload)
