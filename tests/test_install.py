"""The README's service install steps (`systemd/install.sh`), run into a scratch root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def python_for_service() -> str:
    """The system Python the README recommends, or this one where there is none."""
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3"):
        if Path(candidate).exists():
            return candidate
    return sys.executable


def install(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `systemd/install.sh --no-systemctl` with `env`."""
    return subprocess.run(
        ["bash", str(ROOT / "systemd" / "install.sh"), "--no-systemctl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def check(binary: Path, config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed `factory-watcher check -c config`."""
    return subprocess.run(
        [str(binary), "check", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_install_script_lays_out_a_working_service(tmp_path: Path) -> None:
    """install.sh builds the venv, installs unit and config, and `check` passes with credentials."""
    if shutil.which("install") is None:
        pytest.skip("coreutils `install` is not available")
    prefix, etc, units = tmp_path / "opt", tmp_path / "etc", tmp_path / "units"
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "ETC": str(etc),
        "UNIT_DIR": str(units),
        "PYTHON": python_for_service(),
    }
    result = install(env)
    assert result.returncode == 0, result.stderr
    binary = prefix / "venv" / "bin" / "factory-watcher"
    assert binary.exists()
    assert (units / "factory-watcher.service").read_text() == (
        ROOT / "systemd" / "factory-watcher.service"
    ).read_text()
    assert stat.S_IMODE((etc / "credentials").stat().st_mode) == 0o700
    assert stat.S_IMODE((etc / "config.yaml").stat().st_mode) == 0o644

    config = etc / "config.yaml"
    check_env = {**os.environ, "CREDENTIALS_DIRECTORY": str(etc / "credentials")}
    missing = check(binary, config, check_env)
    assert missing.returncode == 78
    assert "factory.api_key_file" in missing.stderr

    for name, value in (("factory-api-key", "fk-0123456789"), ("slack-bot-token", "xoxb-1234")):
        path = etc / "credentials" / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    ok = check(binary, config, check_env)
    assert ok.returncode == 0, ok.stderr

    rerun = install(env)
    assert rerun.returncode == 0
    assert config.read_text() == (ROOT / "systemd" / "config.yaml").read_text()
