"""`factory-watcher render RULE [--event FILE.json] [--target NAME]`: print, never send."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.commands.cli import main
from watcher.commands.exits import EX_FAILURE, EX_OK, EX_USAGE
from watcher.core.model import EventType
from watcher.core.render import render_webhook
from watcher.core.samples import sample_event

ENV = {"FW_API_KEY": "fk-test-0123456789"}

CONFIG = """\
factory:
  api_key: ${{FW_API_KEY}}
state:
  path: {state}
targets:
  team:
    type: slack
    token: xoxb-test-1
    channel: C1
    api_url: "http://127.0.0.1:9/api/"
    card: false
  board: {{type: slack, token: xoxb-test-1, channel: C2, api_url: "http://127.0.0.1:9/api/"}}
  ci:
    type: webhook
    url: "http://127.0.0.1:9/hook"
    template:
      body: |
        {{"title": {{{{ session.title if session else none }}}},
         "answer": {{{{ last_answer }}}}}}
rules:
  - name: done
    on: [session.finished, session.completed]
    notify: [team, ci]
    include_last_answer: true
  - name: styled
    on: session.finished
    notify: team
    template:
      text: "*{{{{ session.title }}}}* took {{{{ durations.duration }}}}"
      blocks:
        - type: section
          text: {{type: mrkdwn, text: "{{{{ data.get('surprise', 'as expected') }}}}"}}
  - name: live
    on: session.finished
    notify: board
  - name: live-styled
    on: session.finished
    notify: board
    template:
      text: "{{{{ session.title }}}} is {{{{ session.status }}}}"
  - name: picky
    on: session.finished
    notify: team
    template:
      text: "{{{{ data.duration_s + 1 }}}}s"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config with a templated rule, a target default template and a built-in rule."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db"))
    path.chmod(0o600)
    return path


def run_cli(config: Path, *args: str) -> tuple[int, str, str]:
    """`factory-watcher -c CONFIG render ARGS` in process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["render", "-c", str(config), *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_slack_rule_prints_text_and_blocks_for_a_sample(config: Path) -> None:
    """Without --event, a sample of the rule's first type; Slack output is JSON."""
    code, out, err = run_cli(config, "styled")
    assert code == EX_OK, err
    shown = json.loads(out)
    assert shown["text"] == "*Refactor the billing module* took 22m 5s"
    assert shown["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "as expected"}}
    ]


def test_target_picks_which_message_and_the_default_template_applies(config: Path) -> None:
    """--target ci prints the webhook body from ci's template; the first target is the default."""
    code, out, err = run_cli(config, "done", "--target", "ci")
    assert code == EX_OK, err
    body = json.loads(out)
    assert body["type"] == "session.finished"
    assert body["version"] == 1
    assert body["title"] == "Refactor the billing module"
    assert body["answer"].startswith("Refactored the billing module")  # include_last_answer
    code, out, err = run_cli(config, "done")
    assert code == EX_OK
    assert "finished" in json.loads(out)["text"]  # built-in for team
    assert "rendered for team; --target picks ci" in err


def test_a_captured_body_replays_through_the_template(config: Path, tmp_path: Path) -> None:
    """A body as a receiver got it (type, id, session, data, version, sequence) renders again."""
    event = sample_event(EventType.FINISHED)
    captured = json.loads(render_webhook(event, "done").body)
    captured["version"], captured["sequence"] = 1, 41
    captured["session"]["title"] = "<!channel> <@U123>"
    captured["data"]["surprise"] = "<!here> & more"
    path = tmp_path / "captured.json"
    path.write_text(json.dumps(captured))
    code, out, err = run_cli(config, "styled", "--event", str(path))
    assert code == EX_OK, err
    shown = json.loads(out)
    assert shown["text"].startswith("*&lt;!channel&gt; &lt;@U123&gt;*")
    assert shown["blocks"][0]["text"]["text"] == "&lt;!here&gt; &amp; more"
    # What `render --target ci` printed is itself a captured body: it replays too.
    code, out, _ = run_cli(config, "done", "--target", "ci", "--event", str(path))
    assert code == EX_OK
    replayed = json.loads(out)
    assert (replayed["id"], replayed["sequence"]) == (event.id, 41)
    path.write_text(out)
    code, out, err = run_cli(config, "done", "--target", "ci", "--event", str(path))
    assert code == EX_OK, err
    assert json.loads(out)["sequence"] == 41


@pytest.mark.parametrize(
    ("args", "file_text", "expected"),
    [
        (["nope"], None, "unknown rule 'nope' (rules: done, styled, live, live-styled, picky)"),
        (["done", "--target", "zz"], None, "rule 'done' does not notify 'zz'"),
        (["done", "--event", "{missing}"], None, "cannot read"),
        (["done", "--event", "{file}"], '{"type": ', "not JSON: Expecting value"),
        (["done", "--event", "{file}"], '{"type": "session.nope"}', "unknown event type"),
        (["done", "--event", "{file}"], "[1]", "expected a JSON object"),
        (["done", "--event", "{file}"], "\udcff", "not UTF-8"),
    ],
)
def test_bad_input_is_a_clear_usage_error(
    config: Path,
    tmp_path: Path,
    args: list[str],
    file_text: str | None,
    expected: str,
) -> None:
    """Unknown rule or target, unreadable or malformed file: one line, exit 2, no traceback."""
    path = tmp_path / "event.json"
    if file_text is not None:
        path.write_bytes(file_text.encode("utf-8", "surrogateescape"))
    argv = [a.format(file=path, missing=tmp_path / "missing.json") for a in args]
    code, out, err = run_cli(config, *argv)
    assert code == EX_USAGE
    assert out == ""
    assert expected in err
    assert "Traceback" not in err


def test_a_template_failing_on_the_given_event_says_so(config: Path, tmp_path: Path) -> None:
    """An event the samples did not foresee: the error, and that the daemon falls back."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"type": "session.finished", "data": {"duration_s": "soon"}}))
    code, out, err = run_cli(config, "picky", "--event", str(path))
    assert (code, out) == (EX_FAILURE, "")
    assert "the template fails on this event" in err
    assert "built-in message instead" in err


def test_the_command_runs_as_a_process_and_sends_nothing(config: Path) -> None:
    """The installed entry point prints the message; the targets are never contacted."""
    completed = subprocess.run(
        [sys.executable, "-m", "watcher", "render", "-c", str(config), "styled"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **ENV},
    )
    assert completed.returncode == EX_OK, completed.stderr
    assert json.loads(completed.stdout)["text"].startswith("*Refactor")


@pytest.mark.parametrize(
    ("rule", "card_text"),
    [
        ("live", ":checkered_flag: nightly-refactor finished"),
        ("live-styled", "Refactor the billing module is idle"),
    ],
)
def test_a_card_target_prints_the_card_and_its_thread_line(
    config: Path, rule: str, card_text: str
) -> None:
    """For a target with live cards: the card (built-in or templated) and the thread line."""
    code, out, err = run_cli(config, rule)
    assert code == EX_OK, err
    shown = json.loads(out)
    assert set(shown) == {"card", "thread_reply"}
    assert shown["card"]["text"].startswith(card_text)
    assert "finished" in shown["thread_reply"]["text"]
    assert "blocks" not in shown["thread_reply"]
