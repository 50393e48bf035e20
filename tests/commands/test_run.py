"""`once`, `test-notify` and `run` on the command line, in process against the loopback rig."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from tests.commands.invoke import run_cli
from tests.process import write_config
from tests.rig import Rig
from watcher.commands.run import send_test_notification
from watcher.core.message import FailureKind, SendFailed
from watcher.core.samples import build_test_notification
from watcher.core.settings import WebhookTarget


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


def test_a_notifier_that_cannot_be_built_is_a_failed_test_send(tmp_path: Path) -> None:
    """`send_test_notification` reports a notifier that raises as built, not a traceback.

    The config refuses a ca_file without a certificate; one that stopped loading
    after the config was read stands for any error the notifier did not foresee.
    """
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    target = WebhookTarget(name="ci", url="https://127.0.0.1:9/h", ca_file=tmp_path / "ca.pem")
    now = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    event = build_test_notification(now, "test-notify", "a test")
    outcome = anyio.run(send_test_notification, target, event, "test-notify")
    assert outcome == SendFailed(FailureKind.PERMANENT, "the notifier cannot be built (SSLError)")


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
