"""The daemon as systemd sees it: notify socket, watchdog, reload, stop, signals."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import secret_env, start_daemon, write_config
from tests.rig import Rig, running_rig, wait_for
from watcher.testing.fakehttp import Fault, FaultRule

pytestmark = pytest.mark.slow


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        """Read every datagram that has arrived."""
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def seen(self, key: str, value: str | None = None, after: int = 0) -> int | None:
        """Index of the first message from `after` on carrying key (=value), or None."""
        for index, fields in enumerate(self.drain()[after:], start=after):
            if key in fields and (value is None or fields[key] == value):
                return index
        return None

    def wait(self, key: str, value: str | None = None, after: int = 0) -> int:
        """Wait for such a message and return its index."""
        found = wait_for(lambda: self.seen(key, value, after) is not None, 15, f"{key}={value}")
        assert found
        result = self.seen(key, value, after)
        assert result is not None
        return result

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path, slack_interval=0.0) as running:
        yield running


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    """A bound notify socket."""
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_ready_watchdog_reload_and_stop(rig: Rig, notify: NotifySocket, tmp_path: Path) -> None:
    """READY, periodic WATCHDOG, RELOADING/READY on a good reload, old config kept on a bad one,
    STOPPING and exit 0 on SIGTERM."""
    rig.sim.add_session("a", status="running")
    rig.sim.add_session("b", status="running")
    config = write_config(rig, tmp_path, ["a"])
    env = {**secret_env(rig), "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    daemon = start_daemon(config, env, tmp_path / "daemon.log")
    try:
        ready = notify.wait("READY", "1")
        first_ping = notify.wait("WATCHDOG", "1", after=ready)
        notify.wait("WATCHDOG", "1", after=first_ping + 1)
        status = notify.wait("STATUS")
        assert "watching 1 session(s)" in notify.messages[status]["STATUS"]

        write_config(rig, tmp_path, ["a", "b"])  # good reload: a new session
        mark = len(notify.drain())
        daemon.process.send_signal(signal.SIGHUP)
        reloading = notify.wait("RELOADING", "1", after=mark)
        assert "MONOTONIC_USEC" in notify.messages[reloading]
        notify.wait("READY", "1", after=reloading)
        wait_for(lambda: rig.sim.request_count("b") >= 1, what="polls of the new session")

        config.write_text("factory: [not, a, mapping\n")  # bad reload
        mark = len(notify.drain())
        daemon.process.send_signal(signal.SIGHUP)
        notify.wait("READY", "1", after=notify.wait("RELOADING", "1", after=mark))
        failed = notify.wait("STATUS", after=mark)
        wait_for(
            lambda: any("reload failed" in m.get("STATUS", "") for m in notify.drain()[mark:]),
            what="reload failure status",
        )
        assert failed >= mark
        daemon.wait_for_log("reload failed, keeping the running config")
        polls = rig.sim.request_count("b")
        wait_for(lambda: rig.sim.request_count("b") > polls + 2, what="polling goes on")
        assert daemon.process.poll() is None

        mark = len(notify.drain())
        assert daemon.stop() == 0
        notify.wait("STOPPING", "1", after=mark)
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()


def test_bad_config_exits_78_without_traceback(tmp_path: Path, rig: Rig) -> None:
    """`run` on a broken config exits 78 (no restart loop under systemd), naming line and key."""
    config = write_config(rig, tmp_path, ["a"])
    config.write_text(config.read_text().replace("[team-slack, ci]", "[team-slak, ci]"))
    daemon = start_daemon(config, secret_env(rig), tmp_path / "daemon.log")
    assert daemon.process.wait(30) == 78
    text = daemon.text()
    assert "Traceback" not in text
    assert "rules[0].notify[0]: unknown target 'team-slak' (did you mean 'team-slack'?)" in text


def test_second_signal_exits_at_once(tmp_path: Path, rig: Rig) -> None:
    """A second SIGTERM during a slow drain stops the daemon without waiting."""
    rig.sim.add_session("a", status="running")
    config = write_config(rig, tmp_path, ["a"])
    daemon = start_daemon(config, secret_env(rig), tmp_path / "daemon.log")
    try:
        daemon.wait_for_log("session.discovered a")
        rig.slack.faults.add(FaultRule(Fault.STALL, "/api/chat.", stall_seconds=30))
        rig.sim.complete_run("a")
        wait_for(lambda: rig.slack.faults.applied, what="the stalled Slack post")
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for_log("stopping: finishing in-flight")
        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - started < 3
        assert "second stop request" in daemon.text()
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
