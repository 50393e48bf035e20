"""Jinja2 templates: sandbox, escaping, JSON safety, strict names, selection and load checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from watcher.core.message import SlackMessage, WebhookMessage
from watcher.core.model import Event, EventType
from watcher.core.samples import sample_event, sample_events, with_answer
from watcher.core.sandbox import MAX_STEPS, RenderLimits
from watcher.core.secret import Secret
from watcher.core.settings import (
    FactorySettings,
    Rule,
    Settings,
    SlackTarget,
    SlackTemplate,
    WebhookTarget,
    WebhookTemplate,
)
from watcher.core.template import (
    TemplateError,
    check_template,
    render_message,
    render_slack_template,
    render_template,
    render_webhook_template,
    template_for,
    template_variables,
)

HOSTILE = "<!channel> <@U123> <https://evil|innocent> & <!subteam^S1>"


def finished(title: str = "Refactor") -> Event:
    """A sample session.finished event whose session has `title`."""
    event = sample_event(EventType.FINISHED)
    assert event.session is not None
    return replace(event, session=replace(event.session, title=title))


def slack(text: str | None = None, blocks: list[object] | None = None) -> SlackTemplate:
    """A Slack template from text and a blocks structure."""
    return SlackTemplate(text=text, blocks=None if blocks is None else json.dumps(blocks))


def test_title_cannot_mention_anyone_through_text_or_blocks() -> None:
    """`<!channel>` and `<@U123>` in a title come out escaped in text and block leaves."""
    template = slack(
        "{{ session.title }} / {{ session.title|upper }} / {{ 'x' ~ session.title }}",
        [{"type": "section", "text": {"type": "mrkdwn", "text": "*{{ session.title }}*"}}],
    )
    message = render_slack_template(template, finished(HOSTILE), "r")
    shown = message.text + json.dumps(message.blocks)
    for dangerous in ("<!channel>", "<@U123>", "<https://evil", "<!subteam"):
        assert dangerous not in shown
    assert "&lt;!channel&gt; &lt;@U123&gt;" in message.text
    assert "&amp;" in message.text


def test_only_what_the_template_marks_safe_passes_unescaped() -> None:
    """`|safe` on the template's own text passes; `link` escapes both of its parts."""
    template = slack("{{ '<!here>'|safe }} {{ session.url|link(session.title) }}")
    message = render_slack_template(template, finished("<@U1> & co"), "r")
    assert message.text.startswith("<!here> <https://app.factory.ai/sessions/")
    assert message.text.endswith("|&lt;@U1&gt; &amp; co>")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ session.__class__ }}",
        "{{ data.items.__globals__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ (0).__class__.__subclasses__() }}",
    ],
)
def test_the_sandbox_refuses_unsafe_attribute_access(source: str) -> None:
    """Dunder and internal attributes are refused at render time, as a TemplateError."""
    with pytest.raises(TemplateError) as caught:
        render_slack_template(slack(source), finished(), "r")
    assert "unsafe" in caught.value.message or "undefined" in caught.value.message.lower()


@pytest.mark.parametrize(
    "source",
    ["{{ 'x' * 10**9 }}", "{{ [0] * 100000 }}", "{{ 10 ** 100000 }}", "{{ range(10**9)|list }}"],
)
def test_the_sandbox_refuses_work_that_would_exhaust_the_daemon(source: str) -> None:
    """Huge repetitions, exponents and ranges fail as a TemplateError instead of stalling."""
    with pytest.raises(TemplateError):
        render_slack_template(slack(source), finished(), "r")


NESTED = "{% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (NESTED, "steps"),  # a million iterations that write
        (  # a billion that write nothing, over one range
            "{% set r = range(1000) %}{% for a in r %}{% for b in r %}{% for c in r %}"
            "{% set d = c %}{% endfor %}{% endfor %}{% endfor %}",
            "steps",
        ),
        (  # exponential recursion without any loop
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(40) }}",
            "steps",
        ),
        (  # a recursive loop over itself
            "{% for x in [1, 2] recursive %}{{ loop([1, 2, 3]) }}{% endfor %}",
            "RecursionError",
        ),
        ("{% for i in range(5000) %}{{ 'x' * 9999 }}{% endfor %}", "output longer"),
        ("{{ range(20000)|list|length }}", "range of more than"),
        # One call that would build a huge value without a step (memory, not time).
        ("{{ 'x'|center(500000000) }}", "center asks for a width or count over"),
        ("{{ 'x'.ljust(500000000) }}", "str.ljust asks for a width or count over"),
        ("{{ 'x'.zfill(width=500000000) }}", "str.zfill asks for a width or count over"),
        (
            "{{ ('x' * 10000)|replace('x', 'x' * 10000)|length }}",
            "replace would make more than",
        ),
        ("{{ ('x' * 10000).replace('x', 'y' * 200) }}", "replace would make more than"),
        ("{{ '%1000000000s'|format(1) }}", "format asks for a width or count over"),
        ("{{ '{:>1000000000}'.format(1) }}", "str.format asks for a width or count over"),
        ("{{ ('x\n' * 5000)|indent(9999) }}", "indent would make more than"),
        ("{{ [1]|batch(100000000, 0)|list|length }}", "batch asks for a width or count"),
        ("{{ [1]|slice(100000000)|list|length }}", "slice asks for a width or count"),
    ],
)
def test_the_work_of_one_render_is_bounded(source: str, reason: str) -> None:
    """Loops in loops, recursion and huge output fail fast with a clear reason and line."""
    with pytest.raises(TemplateError) as caught:
        render_slack_template(slack("first line\n" + source), finished(), "r")
    assert reason in caught.value.message
    if reason == "steps":
        assert f"more than {MAX_STEPS:,} steps" in caught.value.message
        assert caught.value.line == 2


def test_string_methods_and_filters_within_their_bounds_render_as_jinja2_does() -> None:
    """Widths, replacements, formats and indents a message needs go through unchanged."""
    template = slack(
        "{{ 'ab'|center(6) }}|{{ 'x'.ljust(3) }}|{{ 'aa'|replace('a', 'bc') }}|"
        "{{ 'aa'.replace('a', 'b', 1) }}|{{ '%5s'|format('x') }}|{{ '{:>4}'.format(7) }}|"
        "{{ 'a\nb'|indent(2) }}|{{ [1, 2, 3]|batch(2)|list|length }}"
    )
    message = render_slack_template(template, finished(), "r")
    assert message.text == "  ab  |x  |bcbc|ba|    x|   7|a\n  b|2"


def test_a_template_within_its_bounds_renders_whatever_its_loops() -> None:
    """Loops that stay within the budget, in text and blocks together, render in full."""
    template = slack(
        "{% for i in range(300) %}{% for j in range(100) %}.{% endfor %}{% endfor %}",
        [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ range(50)|sum }}"}}],
    )
    message = render_slack_template(template, finished(), "r")
    assert message.text == "." * 30_000
    assert message.blocks[0]["text"]["text"] == 1225


def test_a_render_past_its_time_limit_stops_at_the_next_step() -> None:
    """`out_of_time` is asked at every step: the render ends as soon as it says so."""
    asked: list[int] = []

    def out_of_time() -> bool:
        asked.append(1)
        return len(asked) > 10

    template = WebhookTemplate('{"n": {% for i in range(100) %}{{ i }}+{% endfor %}0}')
    with pytest.raises(TemplateError) as caught:
        render_webhook_template(
            template, finished(), "r", None, RenderLimits(out_of_time=out_of_time)
        )
    assert "took longer than the time limit" in caught.value.message
    assert len(asked) == 11


def test_a_check_past_its_time_limit_reports_the_template_as_too_slow() -> None:
    """`check`'s time limit covers all the samples: once it is up, the template fails."""
    asked: list[int] = []

    def out_of_time() -> bool:
        asked.append(1)
        return len(asked) > 20

    template = slack("{% for i in range(10) %}.{% endfor %}")
    limits = RenderLimits(out_of_time=out_of_time)
    (problem,) = check_template(template, [EventType.FINISHED, EventType.STARTED], None, limits)
    assert "took longer than the time limit" in problem.message
    assert check_template(template, [EventType.FINISHED, EventType.STARTED]) == []


@pytest.mark.parametrize(
    "source",
    ["{{ session.titel }}", "{{ nothing }}", "{{ data.duration_s.x }}", "{{ durations.nope }}"],
)
def test_an_unknown_name_is_an_error_not_an_empty_string(source: str) -> None:
    """StrictUndefined: a misspelt variable fails loudly, with the template line."""
    with pytest.raises(TemplateError) as caught:
        render_slack_template(slack("first line\n" + source), finished(), "r")
    assert "UndefinedError" in caught.value.message
    assert caught.value.line == 2


def test_webhook_values_are_json_whatever_they_contain() -> None:
    """Every expression in a body is JSON-encoded: quotes and braces in values stay data."""
    title = '", "injected": true, "x": "'
    body = '{"title": {{ session.title }}, "data": {{ data }}, "n": {{ data.duration_s }}}'
    message = render_webhook_template(WebhookTemplate(body), finished(title), "r")
    decoded = json.loads(message.body)
    assert decoded["title"] == title
    assert "injected" not in decoded
    assert decoded["data"]["duration_s"] == 1325.0
    assert decoded["n"] == 1325.0


def test_webhook_body_keeps_reserved_keys() -> None:
    """version, type, id, sequence and the template mark are the watcher's, whatever the
    template writes."""
    body = (
        '{"version": 99, "type": "fake", "id": "forged", "sequence": -1, "template": 0, "mine": 1}'
    )
    event = replace(finished(), sequence=12)
    message = render_webhook_template(WebhookTemplate(body), event, "r")
    decoded = json.loads(message.body)
    assert decoded == {
        "version": 1,
        "type": "session.finished",
        "id": event.id,
        "sequence": 12,
        "template": True,
        "mine": 1,
    }
    assert message.id == event.id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[1, 2]", "must render to a JSON object, not an array"),
        ('{"a": "{{ session.id }}"}', "does not render to JSON"),
        ("{{ session.title }}", "must render to a JSON object, not a str"),
        ('{"a": NaN}', "does not render to JSON"),
        ('{"a": {{ range(3) }}}', "is not a JSON value"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(body: str, expected: str) -> None:
    """The output must parse as one JSON object with no NaN; values must be JSON."""
    with pytest.raises(TemplateError) as caught:
        render_webhook_template(WebhookTemplate(body), finished(), "r")
    assert expected in caught.value.message


def test_single_expression_leaves_keep_their_type() -> None:
    """A block leaf that is one `{{ … }}` keeps numbers, booleans and null; text is escaped."""
    blocks = [
        {
            "type": "section",
            "text": {"type": "plain_text", "text": "{{ session.title }}", "emoji": "{{ true }}"},
        },
        {"type": "context", "n": "{{ data.duration_s }}", "none": "{{ none }}"},
    ]
    message = render_slack_template(slack(blocks=blocks), finished("<b>"), "r")
    assert message.blocks[0]["text"] == {"type": "plain_text", "text": "&lt;b&gt;", "emoji": True}
    assert message.blocks[1] == {"type": "context", "n": 1325.0, "none": None}
    assert "finished" in message.text  # no text template: the built-in headline is the fallback


def test_variables_are_plain_documented_values() -> None:
    """session, event, data, durations, usage, rule, sequence and last_answer are all there."""
    rule = Rule(name="done", on=("session.finished",), notify=("team",))
    event = with_answer(replace(finished(), sequence=5), "all done")
    found = template_variables(event, "done", rule)
    assert found["session"]["display_name"] == "nightly-refactor"
    assert found["session"]["labels"] == {"team": "platform"}
    assert found["event"]["type"] == "session.finished"
    assert found["event"]["occurred_at"].endswith("Z")
    assert found["durations"] == {"duration": "22m 5s"}
    assert found["rule"] == {"name": "done", "on": ["session.finished"], "notify": ["team"]}
    assert found["sequence"] == 5
    assert found["last_answer"] == "all done"
    assert set(found["usage"]) >= {"input_tokens", "output_tokens", "factory_credits"}
    assert template_variables(finished(), "done")["last_answer"] is None


def test_filters_format_durations_and_numbers() -> None:
    """`duration` and `number` turn raw data into human text."""
    template = slack("{{ data.duration_s|duration }} {{ 1234567|number }} {{ 'a  b\nc'|shorten }}")
    assert render_slack_template(template, finished(), "r").text == "22m 5s 1,234,567 a b c"


def test_check_reports_compile_errors_with_their_line() -> None:
    """A syntax error is found before any rendering, with the template's own line."""
    problems = check_template(slack("ok\n{% if %}"), [EventType.FINISHED])
    assert len(problems) == 1
    assert problems[0].part == "text"
    assert problems[0].line == 2
    assert "does not compile" in problems[0].message


def test_check_names_the_event_types_a_template_fails_on() -> None:
    """A template using finished-only data fails on the other types of the rule."""
    template = slack("took {{ durations.duration }}")
    problems = check_template(template, [EventType.FINISHED, EventType.STARTED])
    assert [p.message.split(":")[0] for p in problems] == [
        "fails on a sample session.started event"
    ]
    assert check_template(template, [EventType.FINISHED, EventType.COMPLETED]) == []


def test_check_tries_resolved_variants_only_for_rules_that_send_them() -> None:
    """`durations.for` holds for firing conditions; resolved ones carry `lasted` instead."""
    template = slack("held {{ durations['for'] }}")
    firing = Rule(name="stuck", on=("session.stuck",), notify=("t",))
    resolving = replace(firing, resolved=True)
    assert check_template(template, [EventType.STUCK], firing) == []
    assert check_template(template, [EventType.STUCK], resolving) != []


def test_every_sample_renders_with_the_builtin_templates_of_the_docs() -> None:
    """The documented default-safe template renders every type, session or not."""
    template = slack(
        "{% if session %}{{ session.display_name }}{% else %}watcher{% endif %}: {{ headline }}"
    )
    kinds = [k for k in EventType if k is not EventType.DIGEST]
    assert check_template(template, kinds) == []
    assert all(sample_events(k) for k in kinds)


def settings_with(
    rule_template: SlackTemplate | None, target_template: SlackTemplate | None
) -> Settings:
    """One Slack target and one rule, each maybe with a template."""
    return Settings(
        factory=FactorySettings(api_key=Secret("fk-x")),
        state_path=Path("state.db"),
        targets={
            "team": SlackTarget(
                name="team", token=Secret("xoxb-1"), channel="C1", template=target_template
            ),
            "ci": WebhookTarget(name="ci", url="https://x.example/h"),
        },
        rules=(
            Rule(name="done", on=("session.finished",), notify=("team",), template=rule_template),
        ),
    )


def test_the_rule_template_wins_over_the_target_default() -> None:
    """rule > target > built-in; digests always use the built-in rendering."""
    rule_t, target_t = slack("rule"), slack("target")
    settings = settings_with(rule_t, target_t)
    team = settings.targets["team"]
    assert template_for(settings, team, "done", EventType.FINISHED) is rule_t
    assert template_for(settings, team, "other", EventType.FINISHED) is target_t
    assert template_for(settings, team, "done", EventType.DIGEST) is None
    plain = settings_with(None, None)
    assert template_for(plain, plain.targets["team"], "done", EventType.FINISHED) is None
    assert template_for(settings, settings.targets["ci"], "done", EventType.FINISHED) is None


def test_a_template_failing_at_send_time_falls_back_to_the_builtin_message() -> None:
    """Data no sample had costs the template, not the notification; the reason is returned."""
    settings = settings_with(slack("{{ data.surprise }}"), None)
    message, problem = render_message(settings, settings.targets["team"], finished(), "done")
    assert isinstance(message, SlackMessage)
    assert "finished" in message.text
    assert problem is not None
    assert "surprise" in problem


def test_render_template_dispatches_on_the_kind() -> None:
    """A webhook template makes a WebhookMessage, a Slack one a SlackMessage."""
    assert isinstance(render_template(WebhookTemplate("{}"), finished(), "r"), WebhookMessage)
    assert isinstance(render_template(slack("x"), finished(), "r"), SlackMessage)
