"""`outbox list|retry|purge`: dead letters listed, requeued and purged; the database found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from tests.process import write_config
from tests.rig import Rig
from watcher.commands.exits import EX_CONFIG


def test_outbox_list_retry_and_purge(rig: Rig, env: dict[str, str], tmp_path: Path) -> None:
    """Dead letters are listed with their error, can be retried, and purged."""
    rig.sim.add_session("a", status="running")
    config = write_config(rig, tmp_path, ["a"])
    run_cli("once", "-c", str(config))
    rig.slack_hook.revoke()
    rig.sim.archive("a")
    run_cli("once", "-c", str(config))
    code, out, _ = run_cli("outbox", "list", "-c", str(config), "--status", "dead")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["target"], r["event"], r["status"]) for r in rows] == [
        ("ops", "session.archived", "dead")
    ]
    assert "permanent failure" in rows[0]["last_error"]
    assert "1 dead" in out

    code, out, _ = run_cli("outbox", "retry", "-c", str(config))
    assert (code, out.strip()) == (0, "1 dead notification(s) queued again")
    code, out, _ = run_cli("outbox", "purge", "-c", str(config), "--status", "pending")
    assert code == 2
    rig.sim.start_run("a")
    rig.sim.complete_run("a")
    run_cli("once", "-c", str(config))  # 3 delivered; the retried one dies again
    code, out, _ = run_cli("outbox", "purge", "-c", str(config), "--status", "delivered")
    assert out.strip() == "purged 3 delivered notification(s)"
    code, out, _ = run_cli("outbox", "purge", "-c", str(config))
    assert out.strip() == "purged 1 dead notification(s)"


def test_outbox_leaves_an_interpolated_state_path_to_the_config_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${VAR}` in state.path is resolved by the full loader; an unset one exits 78."""
    monkeypatch.setenv("FW_KEY", "fk-test-0123456789")
    monkeypatch.setenv("FW_STATE", str(tmp_path / "var"))
    (tmp_path / "var").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key: ${FW_KEY}\nstate:\n  path: ${FW_STATE}/s.db\n")
    config.chmod(0o600)
    code, out, _ = run_cli("outbox", "list", "-c", str(config))
    assert code == 0
    assert "0 dead" in out
    assert (tmp_path / "var" / "s.db").exists()
    monkeypatch.delenv("FW_STATE")
    code, _, err = run_cli("outbox", "list", "-c", str(config))
    assert code == EX_CONFIG
    assert "environment variable 'FW_STATE' is not set" in err


def test_outbox_on_a_file_that_is_not_a_database_exits_73(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state path that holds something else is named in one line, without a traceback."""
    monkeypatch.setenv("FW_KEY", "fk-test-0123456789")
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    config = tmp_path / "config.yaml"
    config.write_text(f"factory:\n  api_key: ${{FW_KEY}}\nstate:\n  path: {tmp_path}/notes.txt\n")
    config.chmod(0o600)
    code, _, err = run_cli("outbox", "list", "-c", str(config))
    assert code == 73
    assert "cannot open state database" in err
    assert "Traceback" not in err
