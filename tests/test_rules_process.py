"""The rule tools around a real `factory-watcher run` subprocess: mute while running, a kill
inside a settle window, and a recorded stream replayed into the same notifications."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import CONFIG, Daemon, cli, secret_env, start_daemon
from tests.rig import CHANNEL, Rig, running_rig, wait_for

pytestmark = pytest.mark.slow

HEAD, _, _ = CONFIG.partition("rules:\n")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def write(rig: Rig, directory: Path, rules: str, sessions: tuple[str, ...] = ("s1",)) -> Path:
    """A config for the rig with `rules` (YAML text of the rule list)."""
    path = directory / "config.yaml"
    text = HEAD.format(
        api=rig.sim.url,
        interval="200ms",
        state=directory / "state.db",
        sessions="\n".join(f"  - id: {sid}\n    name: name-{sid}" for sid in sessions),
        channel=CHANNEL,
        slack=rig.slack.url,
        receiver=rig.receiver.url,
    )
    path.write_text(text + "rules:\n" + rules)
    path.chmod(0o600)
    return path


def ci(rig: Rig) -> list[tuple[str, str]]:
    """(type, event id) of every webhook the receiver accepted, in order."""
    return [(r.json["type"], r.json["id"]) for r in rig.receiver.requests if r.status < 300]


def started(config: Path, rig: Rig, log: Path) -> Daemon:
    """A daemon that has polled s1 at least once."""
    daemon = start_daemon(config, secret_env(rig), log)
    daemon.wait_for_log("watching 1 session(s)")
    wait_for(lambda: "session.discovered s1" in daemon.text(), what="baseline poll")
    return daemon


def test_mute_takes_effect_on_the_running_daemon(rig: Rig, tmp_path: Path) -> None:
    """`mute` silences the next finish within a poll, records it, and `unmute` restores it."""
    rig.sim.add_session("s1", title="release-1", status="running")
    config = write(rig, tmp_path, "  - {name: done, on: session.finished, notify: ci}\n")
    env = secret_env(rig)
    daemon = started(config, rig, tmp_path / "daemon.log")
    try:
        rig.sim.complete_run("s1")
        wait_for(lambda: len(ci(rig)) == 1, what="first finish")
        muted = cli(
            ["mute", "name-s1", "--for", "2h", "--reason", "deploy", "-c", str(config)],
            env,
            tmp_path,
        )
        assert muted.returncode == 0, muted.stderr
        assert muted.stdout.startswith("muted session name-s1 until ")
        listed = cli(["mute", "--list", "-c", str(config)], env, tmp_path)
        assert "session name-s1 until" in listed.stdout
        assert "(deploy)" in listed.stdout
        rig.sim.start_run("s1")
        rig.sim.complete_run("s1")
        daemon.wait_for_log("session.finished s1 muted")
        assert len(ci(rig)) == 1
        explained = cli(["explain", "s1", "--json", "-c", str(config)], env, tmp_path)
        report = json.loads(explained.stdout)
        rule = report["rules"][0]
        assert rule["held_back_by"][0].startswith("mute: session 'name-s1' until ")
        assert [d["outcome"] for d in rule["decisions"]] == ["sent", "muted"]
        unmuted = cli(["unmute", "name-s1", "-c", str(config)], env, tmp_path)
        assert unmuted.stdout.strip() == "unmuted session name-s1"
        rig.sim.start_run("s1")
        rig.sim.complete_run("s1")
        wait_for(lambda: len(ci(rig)) == 2, what="finish after unmute")
    finally:
        assert daemon.stop() == 0
    assert [t for t, _ in ci(rig)] == ["session.finished", "session.finished"]


def test_a_kill_inside_the_settle_window_still_sends_it_once(rig: Rig, tmp_path: Path) -> None:
    """SIGKILL while a finish settles; after a restart the finish is sent, once."""
    rig.sim.add_session("s1", title="release-1", status="running")
    rules = "  - {name: done, on: session.finished, settle: 3s, notify: ci}\n"
    config = write(rig, tmp_path, rules)
    env = secret_env(rig)
    log = tmp_path / "daemon.log"
    daemon = started(config, rig, log)
    rig.sim.complete_run("s1")
    daemon.wait_for_log("session.finished s1 settling: settling until")
    daemon.stop(signal.SIGKILL)
    assert ci(rig) == []
    report = json.loads(cli(["explain", "s1", "--json", "-c", str(config)], env, tmp_path).stdout)
    assert [s["event"] for s in report["rules"][0]["settling"]] == ["session.finished"]
    again = start_daemon(config, env, log)
    try:
        wait_for(lambda: len(ci(rig)) == 1, timeout=20, what="the settled finish")
    finally:
        assert again.stop() == 0
    listed = cli(["outbox", "list", "-c", str(config)], env, tmp_path).stdout.splitlines()
    rows = [json.loads(line) for line in listed if line.startswith("{")]
    assert [(r["event"], r["status"]) for r in rows] == [("session.finished", "delivered")]
    assert [t for t, _ in ci(rig)] == ["session.finished"]


def test_replay_of_a_recording_prints_what_the_daemon_sent(rig: Rig, tmp_path: Path) -> None:
    """`run --record` then `replay`: the same notifications, to the same targets, in order."""
    rig.sim.add_session("s1", title="release-1", status="running")
    rules = (
        "  - {name: done, on: session.finished, settle: 1s, notify: [ci, team-slack]}\n"
        "  - {name: begin, on: session.started, notify: team-slack}\n"
        "  - {name: stopped, on: session.interrupted, settle: 1s, notify: ci}\n"
        "  - name: spend\n"
        "    on: session.usage_crossed\n"
        "    threshold: {factory_credits: 1}\n"
        "    notify: ci\n"
        "  - {name: legacy, on: session.completed, notify: ci}\n"
    )
    config = write(rig, tmp_path, rules)
    # Replay prints one message per notification; the live card is not replayed.
    config.write_text(
        config.read_text().replace("    api_url: ", "    card: false\n    api_url: ", 1)
    )
    env = secret_env(rig)
    recording = tmp_path / "polls.jsonl"
    daemon = start_daemon(
        config, env, tmp_path / "daemon.log", extra_args=["--record", str(recording)]
    )
    try:
        wait_for(lambda: "session.discovered s1" in daemon.text(), what="baseline poll")
        rig.sim.add_messages("s1", 5)  # 1.75 credits: crosses 1
        rig.sim.complete_run("s1")
        wait_for(lambda: len(ci(rig)) == 3, what="credits, completed and finished")
        rig.sim.start_run("s1")
        wait_for(lambda: len(rig.slack.messages) == 2, what="finished and started")
        rig.sim.interrupt("s1")
        wait_for(lambda: len(ci(rig)) == 4, what="interrupted")
    finally:
        assert daemon.stop() == 0
    replayed = cli(["replay", str(recording), "--json", "-c", str(config)], env, tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    lines = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert [(x["type"], x["event_id"]) for x in lines if x["target"] == "ci"] == ci(rig)
    assert [x["text"] for x in lines if x["target"] == "team-slack"] == [
        m.text for m in rig.slack.messages
    ]
    assert {x["type"] for x in lines} == {
        "session.usage_crossed",
        "session.completed",
        "session.finished",
        "session.started",
        "session.interrupted",
    }
    human = cli(["replay", str(recording), "-c", str(config)], env, tmp_path).stdout
    begin = "team-slack  (rule begin)  name-s1 (s1)  :arrow_forward: name-s1 started running"
    assert begin in human
