"""Fixtures the command tests share: the loopback rig with its secrets, and a rules config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import secret_env
from tests.rig import Rig, running_rig


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


RULES_ENV = {"FW_API_KEY": "fk-test-0123456789"}


RULES_CONFIG = """\
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
    for key, value in RULES_ENV.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "config.yaml"
    path.write_text(RULES_CONFIG.format(state=tmp_path / "state.db"))
    path.chmod(0o600)
    return path
