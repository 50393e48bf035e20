"""The failures many commands share, each turned into one message and one exit code."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from watcher.commands.exits import EX_CANTCREAT, EX_CONFIG, load_config, store_error_exit
from watcher.store import SCHEMA_VERSION, SchemaTooNewError, SqliteStore, StoreError


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


def test_a_database_from_a_newer_release_is_exit_78() -> None:
    """A schema newer than the code: its message, and EX_CONFIG so systemd does not restart."""
    err = io.StringIO()
    code = store_error_exit(SchemaTooNewError("s.db", SCHEMA_VERSION + 1, SCHEMA_VERSION), err)
    assert code == EX_CONFIG
    assert "newer than this factory-watcher understands" in err.getvalue()


@pytest.mark.parametrize("argv", [["outbox", "list"], ["once"], ["mute", "--list"]])
def test_commands_refuse_a_newer_database_with_exit_78(tmp_path: Path, argv: list[str]) -> None:
    """Every command that opens the store refuses a newer schema with exit 78, file untouched."""
    database = tmp_path / "state.db"
    SqliteStore(database).close()
    with sqlite3.connect(database) as db:
        db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    before = database.read_bytes()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"factory:\n  api_key: fk-test\n  base_url: http://127.0.0.1:9\n"
        f"state:\n  path: {database}\nsessions:\n  - id: s1\n"
    )
    config.chmod(0o600)
    code, _, err = run_cli(*argv, "-c", str(config))
    assert code == EX_CONFIG, err
    assert f"has schema version {SCHEMA_VERSION + 1}" in err
    assert database.read_bytes() == before
