"""Canary secrets never appear in logs, errors, command output or the state database."""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import cli, secret_env, start_daemon, write_config
from tests.rig import API_KEY, HOOK_PATH, SLACK_TOKEN, WEBHOOK_SECRET, Rig, running_rig, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path / "rig") as running:
        yield running


def canaries(rig: Rig) -> list[str]:
    """Every secret value, and the parts of them that could leak on their own."""
    raw_key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_")).decode()
    return [
        API_KEY,
        SLACK_TOKEN,
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
        raw_key,
        HOOK_PATH,
        HOOK_PATH.rsplit("/", 1)[1],
        rig.slack_hook.url + HOOK_PATH,
    ]


def test_no_secret_anywhere_through_success_and_failure(rig: Rig, tmp_path: Path) -> None:
    """The whole flow, failures included, leaves no canary in any output or file."""
    work = tmp_path / "work"
    work.mkdir()
    rig.sim.add_session("a", title="Session a", status="running")
    rig.sim.add_session("b", title="Session b", status="running")
    config = write_config(rig, work, ["a", "b"])
    env = secret_env(rig)
    outputs: list[str] = []

    daemon = start_daemon(
        config, env, work / "daemon.log", extra_env={"FACTORY_WATCHER_LOG_LEVEL": "DEBUG"}
    )
    try:
        daemon.wait_for_log("session.discovered a")
        daemon.wait_for_log("session.discovered b")
        rig.sim.complete_run("a")  # delivered fine
        wait_for(lambda: rig.slack.messages, what="a good delivery")
        # Now every destination refuses, some echoing secrets back at us.
        rig.slack.token = "xoxb-rotated"
        rig.slack_hook.revoke()
        rig.receiver.respond_with(500, body=f"bad signature {WEBHOOK_SECRET} {API_KEY}", times=-1)
        rig.sim.complete_run("b")
        rig.sim.archive("b")
        daemon.wait_for_log("dead letter session.archived b -> ops")
        daemon.wait_for_log("dead letter session.status_changed b -> team-slack")
        daemon.wait_for_log("retrying session.status_changed b -> ci")
        rig.sim.set_api_key("fk-rotated")  # the API rejects our key
        daemon.wait_for_log("rejected the API key")
        daemon.wait_for_log("Factory API unavailable")
        # A reload with a broken config whose secret is inline in a world-readable file.
        config.write_text(config.read_text().replace("${FW_API_KEY}", API_KEY))
        config.chmod(0o644)
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload failed")
        assert daemon.stop() == 0
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()

    result = cli(["check", "-c", str(config)], env, work)
    assert result.returncode == 78
    assert "chmod 600" in result.stderr
    outputs += [result.stdout, result.stderr]
    config.chmod(0o600)
    for args in (
        ["check"],
        ["outbox", "list"],
        ["once", "--dry-run"],
        ["test-notify", "ci"],
        ["test-notify", "team-slack"],
    ):
        result = cli([*args, "-c", str(config)], env, work)
        outputs += [result.stdout, result.stderr]
    assert any("invalid_auth" in text for text in outputs)

    files = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.name == "state.db" for p in files)
    for canary in canaries(rig):
        for text in outputs:
            assert canary not in text
        for path in files:
            if path.name == "config.yaml":
                continue
            assert canary.encode() not in path.read_bytes(), f"{canary!r} in {path.name}"
