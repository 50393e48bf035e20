"""What each command imports: `--help` and `outbox list` start without the heavy stack.

Each case runs the command in a fresh interpreter (nothing imported by other
tests) and inspects `sys.modules` when it returns. bench/startup.py times the
same commands; these tests hold the cause, not the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs `watcher.cli.main(argv)` and writes its exit code and sys.modules to a file
# (stdout is the command's own).
PROBE = """
import json, sys
from watcher.commands.cli import main
result_file, argv = sys.argv[1], sys.argv[2:]
try:
    code = main(argv)
except SystemExit as stop:
    code = stop.code
with open(result_file, "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

DAEMON_STACK = (
    "slack_sdk",
    "aiohttp",
    "httpx",
    "apscheduler",
    "anyio",
    "watcher.daemon",
    "watcher.notifiers",
    "watcher.poll.api",
    "watcher.delivery",
)
CONFIG_STACK = ("pydantic", "pydantic_core", "watcher.config.loader", "watcher.config.models")
PARSER_STACK = ("yaml", "watcher.config.yamlsafe", "watcher.store", "sqlite3")
# The rules' state the store reads and writes only when a poll or the timer asks.
RULE_ENGINE = ("watcher.core.rulestate", "watcher.core.lifecycle", "watcher.core.settings")


def imported_by(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The modules loaded once `factory-watcher ARGV` has run (asserting it exited 0)."""
    result = cwd / "probe.json"
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(result), *argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    found = json.loads(result.read_text())
    assert found["code"] in (0, None), (found["code"], completed.stdout, completed.stderr)
    return set(found["modules"])


def loaded(modules: set[str], stack: tuple[str, ...]) -> set[str]:
    """The members of `stack` (or their submodules) present in `modules`."""
    return {name for name in modules for top in stack if name == top or name.startswith(top + ".")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["check", "--help"], ["outbox", "--help"], ["run", "--help"]],
)
def test_help_imports_no_daemon_config_or_parser(argv: list[str], tmp_path: Path) -> None:
    """Help and version load neither the daemon stack, the config loader, YAML nor the store."""
    modules = imported_by(argv, tmp_path)
    assert loaded(modules, DAEMON_STACK + CONFIG_STACK + PARSER_STACK) == set()


@pytest.mark.slow
def test_check_imports_the_config_loader_but_not_the_daemon(tmp_path: Path) -> None:
    """`check` validates with pydantic and YAML, but loads no daemon, notifier or HTTP client."""
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: ${FW_KEY}\n")
    config.chmod(0o600)
    modules = imported_by(["check", "-c", str(config)], tmp_path, {"FW_KEY": "fk-test"})
    assert loaded(modules, DAEMON_STACK) == set()
    assert {"pydantic", "watcher.config.loader"} <= modules  # it did validate


@pytest.mark.slow
def test_outbox_list_imports_neither_the_daemon_nor_the_config_loader(tmp_path: Path) -> None:
    """`outbox list` reads `state.path` with the YAML parser alone and opens the store."""
    config = tmp_path / "config.yaml"
    config.write_text(f"factory:\n  api_key: ${{FW_KEY}}\nstate:\n  path: {tmp_path / 's.db'}\n")
    config.chmod(0o600)
    modules = imported_by(["outbox", "list", "-c", str(config)], tmp_path, {"FW_KEY": "fk-test"})
    assert loaded(modules, DAEMON_STACK + CONFIG_STACK + RULE_ENGINE) == set()
    assert "watcher.store" in modules
    assert (tmp_path / "s.db").exists()
