"""The `factory-watcher` command line, driven in process against the loopback rig."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import secret_env, write_config
from tests.rig import Rig, running_rig
from watcher.commands.cli import EX_CONFIG, main


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


@pytest.fixture
def env(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The config's secrets in the environment."""
    values = secret_env(rig)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `factory-watcher ARGS`; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_check_accepts_a_good_config(rig: Rig, env: dict[str, str], tmp_path: Path) -> None:
    """`check` prints a summary and exits 0."""
    config = write_config(rig, tmp_path, ["a", "b"])
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == 0
    assert "ok (2 session(s), 4 rule(s), 3 target(s))" in out


def test_check_warns_when_the_budget_is_short_but_exits_0(tmp_path: Path) -> None:
    """Sessions that cannot all be polled at their intervals within the budget: a warning."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "factory:\n  api_key: fk-x\n  max_requests_per_second: 1\n"
        "poll:\n  interval: 30s\n  running: 1s\n"
        "sessions:\n  - id: a\n  - id: b\n"
        "discover:\n  interval: 10s\n"
    )
    config.chmod(0o600)
    code, out, _ = run_cli("check", "-c", str(config))
    assert code == 0
    assert "ok (2 session(s), 0 rule(s), 0 target(s), discovery on)" in out
    assert (
        "warning: at their fastest intervals the configured sessions (and discovery) need "
        "2.10 requests/s, more than factory.max_requests_per_second (1)"
    ) in out


def test_check_lists_every_problem_and_exits_78(tmp_path: Path) -> None:
    """A broken config exits 78 with every problem on its own line and no traceback."""
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: x\n  timout: 5s\npoll:\n  interval: soon\n")
    config.chmod(0o600)
    code, _, err = run_cli("check", "-c", str(config))
    assert code == EX_CONFIG
    assert "config.yaml:3: factory.timout: unknown key (did you mean 'timeout'?)" in err
    assert "config.yaml:5: poll.interval:" in err
    assert "Traceback" not in err


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not raised."""
    code, _, err = run_cli("check", "-c", str(tmp_path / "nope.yaml"))
    assert code == EX_CONFIG
    assert "nope.yaml" in err


def test_once_dry_run_prints_and_sends_nothing(
    rig: Rig, env: dict[str, str], tmp_path: Path
) -> None:
    """`once --dry-run` shows what it would send and neither stores nor sends."""
    rig.sim.add_session("a", status="running")
    config = write_config(rig, tmp_path, ["a"])
    assert run_cli("once", "-c", str(config))[0] == 0  # discovery, stored
    rig.sim.complete_run("a")
    code, out, _ = run_cli("once", "--dry-run", "-c", str(config))
    assert code == 0
    assert "would post a card to team-slack (rule finished)" in out  # a live-card target
    assert "would send to ci (rule completed)" in out
    assert rig.slack.messages == []
    code, out, _ = run_cli("once", "-c", str(config))  # the real thing still finds it
    assert code == 0
    assert "sent 3 notification(s)" in out
    assert len(rig.slack.messages) == 1
    rig.sim.start_run("a")
    assert run_cli("once", "-c", str(config))[0] == 0  # sees it running
    rig.sim.complete_run("a")
    code, out, _ = run_cli("once", "--dry-run", "-c", str(config))
    assert "would update the card on team-slack (rule finished)" in out


def test_once_reads_the_list_first_when_discovery_is_on(
    rig: Rig, env: dict[str, str], tmp_path: Path
) -> None:
    """`once` with `discover:` takes the baseline, then tells what changed on the next run."""
    rig.sim.add_session("d1", title="Found", status="running")
    config = write_config(rig, tmp_path, [])
    config.write_text(config.read_text().replace("sessions:", "discover:\nsessions:"))
    code, out, _ = run_cli("once", "-c", str(config))
    assert code == 0
    assert "polled 1 session(s), 0 failed; sent 0 notification(s)" in out
    rig.sim.complete_run("d1")
    code, out, _ = run_cli("once", "-c", str(config))
    assert code == 0
    assert "sent 3 notification(s)" in out  # as for a hand-listed session
    assert "Found stopped running" in rig.slack.messages[0].text


def test_once_reports_failed_polls(rig: Rig, env: dict[str, str], tmp_path: Path) -> None:
    """A session the API cannot serve makes `once` exit 1 and say why."""
    config = write_config(rig, tmp_path, ["a"])
    rig.sim.set_api_key("fk-other")
    code, out, _ = run_cli("once", "-c", str(config))
    assert code == 1
    assert "a: poll failed: HTTP 401: the API key was rejected" in out


POISONED = (
    b'{"sessionId": "p", "status": "idle", "messageCount": 1, "createdAt": 1,'
    b' "updatedAt": -166036958850935616}'
)


@pytest.mark.parametrize("dry_run", [False, True])
def test_once_reports_unreadable_sessions_and_delivers_the_rest(
    rig: Rig, env: dict[str, str], tmp_path: Path, dry_run: bool
) -> None:
    """An unreadable body is one line in the output and exit 1; the other session goes on."""
    rig.sim.add_session("a", status="running")
    rig.sim.serve_raw("p", POISONED)
    config = write_config(rig, tmp_path, ["a", "p"])
    run_cli("once", "-c", str(config))
    rig.sim.complete_run("a")
    flags = ["--dry-run"] if dry_run else []
    code, out, err = run_cli("once", *flags, "-c", str(config))
    assert code == 1
    assert "p: poll failed: unreadable session: updatedAt out of range" in out
    assert "Traceback" not in out + err
    if dry_run:
        assert "would send to ci (rule completed)" in out
    else:
        assert "polled 2 session(s), 1 failed; sent 3 notification(s)" in out
        assert len(rig.slack.messages) == 1


@pytest.mark.parametrize("target", ["team-slack", "ops", "ci"])
def test_test_notify_reaches_each_target(
    rig: Rig, env: dict[str, str], tmp_path: Path, target: str
) -> None:
    """`test-notify TARGET` sends one test message through the real notifier."""
    config = write_config(rig, tmp_path, [])
    code, out, _ = run_cli("test-notify", "-c", str(config), target)
    assert (code, out.strip()) == (0, f"{target}: delivered")
    received = len(rig.slack.messages) + len(rig.slack_hook.messages) + len(rig.receiver.requests)
    assert received == 1


def test_test_notify_reports_failures_and_unknown_targets(
    rig: Rig, env: dict[str, str], tmp_path: Path
) -> None:
    """A refused test message exits 1 with the reason; an unknown target exits 2."""
    config = write_config(rig, tmp_path, [])
    rig.slack_hook.revoke()
    code, out, _ = run_cli("test-notify", "-c", str(config), "ops")
    assert code == 1
    assert "ops: failed (permanent)" in out
    assert run_cli("test-notify", "-c", str(config), "nope")[0] == 2


def test_outbox_list_retry_and_purge(rig: Rig, env: dict[str, str], tmp_path: Path) -> None:
    """Dead letters are listed with their error, can be retried, and purged."""
    rig.sim.add_session("a", status="running")
    config = write_config(rig, tmp_path, ["a"])
    run_cli("once", "-c", str(config))
    rig.slack_hook.revoke()
    rig.sim.archive("a")
    run_cli("once", "-c", str(config))
    code, out, _ = run_cli("outbox", "list", "-c", str(config), "--status", "dead")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["target"], r["event"], r["status"]) for r in rows] == [
        ("ops", "session.archived", "dead")
    ]
    assert "permanent failure" in rows[0]["last_error"]
    assert "1 dead" in out

    code, out, _ = run_cli("outbox", "retry", "-c", str(config))
    assert (code, out.strip()) == (0, "1 dead notification(s) queued again")
    code, out, _ = run_cli("outbox", "purge", "-c", str(config), "--status", "pending")
    assert code == 2
    rig.sim.start_run("a")
    rig.sim.complete_run("a")
    run_cli("once", "-c", str(config))  # 3 delivered; the retried one dies again
    code, out, _ = run_cli("outbox", "purge", "-c", str(config), "--status", "delivered")
    assert out.strip() == "purged 3 delivered notification(s)"
    code, out, _ = run_cli("outbox", "purge", "-c", str(config))
    assert out.strip() == "purged 1 dead notification(s)"


def test_outbox_leaves_an_interpolated_state_path_to_the_config_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${VAR}` in state.path is resolved by the full loader; an unset one exits 78."""
    monkeypatch.setenv("FW_KEY", "fk-test-0123456789")
    monkeypatch.setenv("FW_STATE", str(tmp_path / "var"))
    (tmp_path / "var").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: ${FW_KEY}\nstate:\n  path: ${FW_STATE}/s.db\n")
    config.chmod(0o600)
    code, out, _ = run_cli("outbox", "list", "-c", str(config))
    assert code == 0
    assert "0 dead" in out
    assert (tmp_path / "var" / "s.db").exists()
    monkeypatch.delenv("FW_STATE")
    code, _, err = run_cli("outbox", "list", "-c", str(config))
    assert code == EX_CONFIG
    assert "environment variable 'FW_STATE' is not set" in err


def test_outbox_on_a_file_that_is_not_a_database_exits_73(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state path that holds something else is named in one line, without a traceback."""
    monkeypatch.setenv("FW_KEY", "fk-test-0123456789")
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    config = tmp_path / "config.yaml"
    config.write_text(f"factory:\n  api_key: ${{FW_KEY}}\nstate:\n  path: {tmp_path}/notes.txt\n")
    config.chmod(0o600)
    code, _, err = run_cli("outbox", "list", "-c", str(config))
    assert code == 73
    assert "cannot open state database" in err
    assert "Traceback" not in err
