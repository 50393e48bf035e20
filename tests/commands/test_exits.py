"""The failures many commands share, each turned into one message and one exit code."""

from __future__ import annotations

import io
from pathlib import Path

from watcher.commands.exits import EX_CANTCREAT, load_config, store_error_exit
from watcher.store import StoreError


def test_a_store_error_is_one_line_and_exit_73() -> None:
    """A state database the store cannot use: its message after the program name, exit 73."""
    err = io.StringIO()
    code = store_error_exit(StoreError("cannot open state database s.db: not a database"), err)
    assert code == EX_CANTCREAT
    assert err.getvalue() == "factory-watcher: cannot open state database s.db: not a database\n"


def test_a_config_that_does_not_load_lists_its_problems(tmp_path: Path) -> None:
    """No settings; every problem listed under one heading, each with file and line."""
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: x\n  timout: 5s\npoll:\n  interval: soon\n")
    config.chmod(0o600)
    err = io.StringIO()
    assert load_config(config, err) is None
    lines = err.getvalue().splitlines()
    assert lines[0] == "factory-watcher: invalid configuration:"
    assert any("config.yaml:3: factory.timout: unknown key" in line for line in lines[1:])
    assert any("config.yaml:5: poll.interval:" in line for line in lines[1:])
