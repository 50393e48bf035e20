"""Running `factory-watcher` as a real subprocess against the loopback rig."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.rig import (
    API_KEY,
    CHANNEL,
    HOOK_PATH,
    SLACK_TOKEN,
    WEBHOOK_SECRET,
    Rig,
    wait_for,
)

CONFIG = """\
factory:
  base_url: {api}
  api_key: ${{FW_API_KEY}}
  timeout: 2s
  unavailable_after: 1s
poll:
  interval: {interval}
  jitter: 10%
state:
  path: {state}
sessions:
{sessions}
targets:
  team-slack:
    type: slack
    token: ${{FW_SLACK_TOKEN}}
    channel: {channel}
    api_url: {slack}/api/
  ops:
    type: slack_webhook
    url: ${{FW_SLACK_WEBHOOK_URL}}
  ci:
    type: webhook
    url: {receiver}/factory
    secret: ${{FW_WEBHOOK_SECRET}}
    allow_http: true
rules:
  - name: finished
    on: session.status_changed
    when: {{from: running, to: idle}}
    notify: [team-slack, ci]
  - name: completed
    on: session.completed
    notify: ci
  - name: gone
    on: [session.archived, session.deleted]
    notify: ops
  - name: outage
    on: [watcher.api_unavailable, watcher.api_recovered]
    notify: ops
"""


def write_config(
    rig: Rig, directory: Path, session_ids: Sequence[str], interval: str = "200ms"
) -> Path:
    """Write a config file for the rig per DESIGN.md's contract; secrets come from env."""
    path = directory / "config.yaml"
    path.write_text(
        CONFIG.format(
            api=rig.sim.url,
            interval=interval,
            state=directory / "state.db",
            sessions="\n".join(f"  - id: {sid}" for sid in session_ids),
            channel=CHANNEL,
            slack=rig.slack.url,
            receiver=rig.receiver.url,
        )
    )
    path.chmod(0o600)
    return path


def secret_env(rig: Rig) -> dict[str, str]:
    """The environment that carries the config's secrets."""
    return {
        "FW_API_KEY": API_KEY,
        "FW_SLACK_TOKEN": SLACK_TOKEN,
        "FW_SLACK_WEBHOOK_URL": rig.slack_hook.url + HOOK_PATH,
        "FW_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


@dataclass
class Daemon:
    """A running `factory-watcher run` whose stderr goes to a file."""

    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        """Everything it logged so far."""
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 15.0) -> None:
        """Wait until the log contains `needle`."""
        wait_for(
            lambda: needle in self.text() or self.process.poll() is not None,
            timeout,
            f"log line {needle!r}",
        )
        assert needle in self.text(), f"daemon exited early:\n{self.text()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig` and return the exit code."""
        self.process.send_signal(sig)
        return self.process.wait(timeout)


def cli(
    args: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one `factory-watcher` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_daemon(
    config: Path,
    env: Mapping[str, str],
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> Daemon:
    """Start `python -m watcher run -c config [extra_args]` in the background."""
    handle = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run", "-c", str(config), *extra_args],
        env={**os.environ, **env, **(extra_env or {})},
        cwd=config.parent,
        stdout=handle,
        stderr=handle,
        stdin=subprocess.DEVNULL,
    )
    handle.close()
    return Daemon(process, log)
