"""The rule tools on the command line, in process: check warnings, mute, explain, replay."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.commands.cli import EX_OK, EX_USAGE, main

ENV = {"FW_API_KEY": "fk-test-0123456789"}

CONFIG = """\
factory:
  api_key: ${{FW_API_KEY}}
state:
  path: {state}
sessions:
  - {{id: s1, name: nightly, labels: {{team: web}}}}
targets:
  ci: {{type: webhook, url: "https://hooks.example.com/a"}}
  unused: {{type: webhook, url: "https://hooks.example.com/b"}}
quiet_hours:
  night: {{start: "22:00", end: "07:00", timezone: Europe/Berlin}}
  never: {{start: "01:00", end: "02:00"}}
rules:
  - {{name: done, on: session.finished, settle: 2s, notify: ci}}
  - {{name: loop, on: session.status_changed, when: {{from: idle, to: idle}}, notify: ci}}
  - {{name: other, on: session.finished, when: {{session: "x-*"}}, notify: ci}}
  - {{name: teams, on: session.finished, when: {{labels: {{team: api}}}}, notify: ci}}
  - {{name: api, on: watcher.api_unavailable, when: {{title: ["a*"]}}, notify: ci}}
  - {{name: loud, on: session.stuck, for: 5m, urgent: true, quiet_hours: night, notify: ci}}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file with rules that cannot fire and an unused target and window."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(state=tmp_path / "state.db"))
    path.chmod(0o600)
    return path


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `factory-watcher ARGS`; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_check_warns_about_rules_that_cannot_fire_and_unused_names(config: Path) -> None:
    """Warnings name each rule that can never fire and each unused target and window; exit 0."""
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == EX_OK
    warnings = [line.split(": warning: ", 1)[1] for line in out.splitlines()[1:]]
    assert warnings == [
        "rule 'loop' can never fire: a status change never goes from 'idle' to 'idle'",
        "rule 'other' can never fire for the configured sessions: 'when.session' ['x-*'] "
        "matches none of them",
        "rule 'teams' can never fire for the configured sessions: no session has the labels "
        "{'team': 'api'}",
        "rule 'api' can never fire: watcher.api_unavailable concern no session, but the rule "
        "has session conditions under 'when'",
        "rule 'loud' is urgent, so its 'quiet_hours' has no effect",
        "target 'unused' is not used by any rule",
        "quiet-hours window 'never' is not used by any rule",
    ]


def test_mute_list_unmute_and_usage_errors(config: Path) -> None:
    """Mutes are stored with their end and reason; bad requests say what is wrong."""
    assert run_cli("mute", "--list", "-c", str(config))[1] == "no mutes in force\n"
    code, out, _ = run_cli("mute", "--rule", "done", "--for", "2h", "-c", str(config))
    assert code == EX_OK
    assert out.startswith("muted rule done until ")
    until = datetime.fromisoformat(out.split(" until ")[1].strip())
    assert timedelta(hours=1, minutes=59) < until - datetime.now(UTC) <= timedelta(hours=2)
    assert run_cli("mute", "nightly", "--reason", "deploy", "-c", str(config))[0] == EX_OK
    listed = run_cli("mute", "--list", "-c", str(config))[1].splitlines()
    assert listed[0].startswith("rule done until 20")
    assert listed[1] == "session nightly until unmuted (deploy)"
    assert run_cli("mute", "-c", str(config))[2] == (
        "factory-watcher: name a SESSION or --rule NAME (one of them)\n"
    )
    code, _, err = run_cli("mute", "--rule", "dnoe", "-c", str(config))
    assert code == EX_USAGE
    assert "no rule matches 'dnoe'" in err
    code, _, err = run_cli("mute", "s1", "--for", "soon", "-c", str(config))
    assert (code, err.split(":")[1].strip()) == (EX_USAGE, "--for")
    assert run_cli("unmute", "--rule", "done", "-c", str(config))[1] == "unmuted rule done\n"
    assert run_cli("unmute", "--rule", "done", "-c", str(config))[1] == "no mute on rule done\n"
    assert run_cli("mute", "--list", "-c", str(config))[1].splitlines() == [
        "session nightly until unmuted (deploy)"
    ]


def test_explain_a_session_never_polled(config: Path) -> None:
    """Explain says when nothing is stored yet, and reports every rule with its conditions."""
    code, out, _ = run_cli("explain", "nightly", "-c", str(config))
    assert code == EX_OK
    assert out.splitlines()[:2] == [
        "session s1 (nightly)",
        "  never polled successfully (nothing stored yet)",
    ]
    code, out, _ = run_cli("explain", "s1", "--json", "-c", str(config))
    report = json.loads(out)
    assert [r["name"] for r in report["rules"]] == ["done", "loop", "other", "teams", "api", "loud"]
    other = report["rules"][2]
    assert other["conditions_hold"] is False
    assert other["held_back_by"] == ["condition: session 's1' matches none of ['x-*']"]


def body(status: str, updated: int, completed: int | None = None) -> dict[str, object]:
    """A session body for s1."""
    found: dict[str, object] = {
        "sessionId": "s1",
        "title": "release",
        "status": status,
        "messageCount": 1,
        "createdAt": 1_000,
        "updatedAt": updated,
    }
    if completed is not None:
        found["completedAt"] = completed
    return found


def test_replay_prints_when_and_where_without_touching_the_state_db(
    config: Path, tmp_path: Path
) -> None:
    """A hand-written recording: one settled finish, printed at its settle time, no DB made."""
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
    lines = [
        {"at": t0.isoformat(), "session": "s1", "status": 200, "body": body("running", 1_000)},
        {
            "at": (t0 + timedelta(seconds=10)).isoformat(),
            "session": "s1",
            "status": 200,
            "body": body("idle", 2_000, 2_000),
        },
        {"at": (t0 + timedelta(seconds=20)).isoformat(), "session": "s1", "status": 404},
    ]
    recording = tmp_path / "polls.jsonl"
    recording.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, err = run_cli("replay", str(recording), "-c", str(config))
    assert (code, err) == (EX_OK, "")
    assert out.splitlines() == [
        "2026-11-30T12:00:12Z  ci  (rule done)  session.finished "
        + out.split("session.finished ")[1].split()[0]
    ]
    assert not (tmp_path / "state.db").exists()
    recording.write_text('{"at": "yesterday"}\n')
    code, _, err = run_cli("replay", str(recording), "-c", str(config))
    assert code == EX_USAGE
    assert err == f"factory-watcher: {recording}:1: not a recorded poll (ValueError)\n"


def test_run_with_an_unwritable_record_file_says_so(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --record` into a directory that cannot be created is a clear error, no traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, _ = run_cli("run", "--record", str(blocker / "polls.jsonl"), "-c", str(config))
    assert code == 73
    assert capsys.readouterr().err == (
        f"factory-watcher: cannot open the record file {blocker / 'polls.jsonl'}: File exists\n"
    )
