"""A webhook's URL and header values are secrets: no log, error, command or database shows them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from tests.rig import API_KEY, Rig, running_rig

TOKEN_URL_PATH = "/factory?token=canary-url-token-91c4"
HEADER_VALUE = "canary-header-key-37d0"

CONFIG = """\
factory:
  base_url: {api}
  api_key: ${{FW_API_KEY}}
  timeout: 2s
state:
  path: {state}
sessions:
  - id: s1
targets:
  ci:
    type: webhook
    url: {url}
    headers: {{X-Api-Key: {header}}}
    allow_http: true
rules:
  - name: finished
    on: session.status_changed
    notify: ci
"""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path / "rig") as running:
        yield running


def test_webhook_url_and_headers_never_show(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that echoes the URL and the header back: the failure is logged, stored
    and listed with both masked, and `status`, `doctor` and the database never show them."""
    url = rig.receiver.url + TOKEN_URL_PATH
    config = tmp_path / "config.yaml"
    state = tmp_path / "state.db"
    config.write_text(CONFIG.format(api=rig.sim.url, state=state, url=url, header=HEADER_VALUE))
    config.chmod(0o600)
    monkeypatch.setenv("FW_API_KEY", API_KEY)
    rig.sim.add_session("s1", title="Session one", status="running")
    rig.receiver.respond_with(500, body=f"no: {url} with {HEADER_VALUE}", times=-1)
    outputs = [run_cli("--log-level", "DEBUG", "once", "-c", str(config))]
    rig.sim.complete_run("s1")
    outputs.append(run_cli("--log-level", "DEBUG", "once", "-c", str(config)))
    assert any(r.status == 500 for r in rig.receiver.requests)  # the echo came back
    for args in (("outbox", "list"), ("status",), ("doctor",), ("check",)):
        outputs.append(run_cli(*args, "-c", str(config)))
    texts = [text for _, out, err in outputs for text in (out, err)]
    assert any("HTTP 500" in text for text in texts)  # the failure itself is shown
    files = [p for p in tmp_path.glob("state.db*") if p.is_file()]
    assert files
    for canary in (url, HEADER_VALUE):
        for text in texts:
            assert canary not in text
        for path in files:
            assert canary.encode() not in path.read_bytes(), f"{canary!r} in {path.name}"
