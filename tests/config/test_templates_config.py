"""Templates in the YAML: where they go, and load-time errors with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watcher.config.loader import ConfigError, ConfigProblem, load_settings
from watcher.core.settings import Settings, SlackTemplate, WebhookTemplate

ENV = {"FACTORY_API_KEY": "fk-test-0123456789"}
HEAD = """\
factory:
  api_key: ${FACTORY_API_KEY}
targets:
  team:
    type: slack
    token: xoxb-test-1
    channel: C1
  ci:
    type: webhook
    url: https://hooks.example.com/a
"""


def load(text: str, tmp_path: Path) -> Settings:
    """Load `text` as a config file in `tmp_path`."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return load_settings(path, env=ENV)


def problems(text: str, tmp_path: Path) -> list[ConfigProblem]:
    """The problems of loading `text`, which must fail."""
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    return list(caught.value.problems)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_rule_and_target_templates_land_in_the_settings(tmp_path: Path) -> None:
    """text, blocks (a YAML structure) and body are kept; include_last_answer too."""
    text = (
        HEAD.replace(
            "    channel: C1\n",
            "    channel: C1\n    template:\n      text: 'team: {{ headline }}'\n",
        )
        + """\
rules:
  - name: done
    on: session.finished
    notify: team
    include_last_answer: true
    template:
      text: "{{ session.title }} finished"
      blocks:
        - type: section
          text: {type: mrkdwn, text: "*{{ session.title }}*"}
  - name: hook
    on: [session.finished, session.started]
    notify: ci
    template:
      body: '{"t": {{ session.title }}}'
"""
    )
    settings = load(text, tmp_path)
    done, hook = settings.rules
    assert done.include_last_answer
    assert isinstance(done.template, SlackTemplate)
    assert done.template.text == "{{ session.title }} finished"
    assert json.loads(done.template.blocks or "") == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*{{ session.title }}*"}}
    ]
    assert hook.template == WebhookTemplate('{"t": {{ session.title }}}')
    assert settings.targets["team"].template == SlackTemplate(text="team: {{ headline }}")


def test_a_syntax_error_names_file_and_the_line_inside_a_block_scalar(tmp_path: Path) -> None:
    """The line is the file line of the broken template line, not the key's."""
    text = (
        HEAD
        + """\
rules:
  - name: done
    on: session.finished
    notify: team
    template:
      text: |
        {{ session.title }}
        {% if session.status %}
        never closed
"""
    )
    (found,) = problems(text, tmp_path)
    assert found.file.endswith("config.yaml")
    assert found.line == line_of(text, "never closed")  # where Jinja found the block unclosed
    assert found.key == "rules[0].template.text"
    assert "does not compile" in found.message


def test_a_template_failing_on_one_sample_type_is_a_config_error(tmp_path: Path) -> None:
    """durations.duration exists for finished, not started: the error names started."""
    text = (
        HEAD
        + """\
rules:
  - name: done
    on: [session.finished, session.started]
    notify: team
    template:
      text: "ok"
      blocks:
        - type: section
          text:
            type: mrkdwn
            text: "took {{ durations.duration }}"
"""
    )
    (found,) = problems(text, tmp_path)
    assert found.line == line_of(text, "took {{")
    assert found.key == "rules[0].template.blocks[0].text.text"
    assert "session.started" in found.message
    assert "session.finished" not in found.message
    assert "'dict object' has no attribute 'duration'" in found.message


def test_a_template_with_loops_in_loops_is_refused_at_load_with_file_and_line(
    tmp_path: Path,
) -> None:
    """A template that would take seconds is cut short: a config error at its own line."""
    text = (
        HEAD
        + """\
rules:
  - name: done
    on: session.finished
    notify: team
    template:
      text: |
        {{ session.title }}
        {% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}
"""
    )
    (found,) = problems(text, tmp_path)
    assert found.file.endswith("config.yaml")
    assert found.line == line_of(text, "{% for a in")
    assert found.key == "rules[0].template.text"
    assert "more than 100,000 steps (loop iterations, calls, range items)" in found.message


def test_a_target_default_must_render_every_type(tmp_path: Path) -> None:
    """A target's template meets every type, the watcher's own sessionless ones too."""
    text = HEAD.replace(
        "    url: https://hooks.example.com/a\n",
        "    url: https://hooks.example.com/a\n    template:\n"
        "      body: '{\"title\": {{ session.title }}}'\n",
    )
    (found,) = problems(text, tmp_path)
    assert found.key == "targets.ci.template.body"
    assert found.line == line_of(text, "body:")
    assert "watcher.api_unavailable" in found.message
    guarded = text.replace("{{ session.title }}", "{{ session.title if session else none }}")
    assert load(guarded, tmp_path).targets["ci"].template is not None


@pytest.mark.parametrize(
    ("notify", "template", "expected"),
    [
        ("ci", "{text: hi}", "'text'/'blocks' are for Slack targets, not 'ci' (webhook)"),
        ("team", "{body: '{}'}", "'body' is for webhook targets, not 'team' (slack)"),
        ("team", "{text: hi, body: '{}'}", "give either 'body'"),
        ("team", "{}", "expected 'text' and/or 'blocks'"),
        ("team", "{subject: x}", "unknown key"),
    ],
)
def test_a_rule_template_must_suit_its_targets(
    tmp_path: Path, notify: str, template: str, expected: str
) -> None:
    """A Slack template on a webhook target (or the reverse) is refused at its line."""
    text = (
        HEAD
        + f"""\
rules:
  - name: done
    on: session.finished
    notify: {notify}
    template: {template}
"""
    )
    found = problems(text, tmp_path)
    assert any(expected in p.message for p in found), found
    assert all(p.line == line_of(text, "template:") for p in found)


def test_include_last_answer_applies_to_session_events_only(tmp_path: Path) -> None:
    """The watcher's own events have no session to read an answer from."""
    text = (
        HEAD
        + """\
rules:
  - name: outage
    on: watcher.api_unavailable
    notify: team
    include_last_answer: true
"""
    )
    (found,) = problems(text, tmp_path)
    assert found.key == "rules[0].include_last_answer"
    assert "means nothing for watcher.api_unavailable" in found.message


def test_a_sandbox_escape_is_refused_when_the_config_loads(tmp_path: Path) -> None:
    """An unsafe attribute is found by the sample render, not at send time."""
    text = (
        HEAD
        + """\
rules:
  - name: done
    on: session.finished
    notify: team
    template:
      text: "{{ session.__class__.__mro__ }}"
"""
    )
    (found,) = problems(text, tmp_path)
    assert "unsafe" in found.message or "no attribute" in found.message
