"""`factory-watcher report NAME`: a report made now from the state database, printed only."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from tests.core.reportsim import History
from tests.webhook_schema import schema_problems
from watcher.commands.exits import EX_CANTCREAT, EX_OK, EX_USAGE
from watcher.store import SqliteStore

CONFIG = """\
factory:
  api_key: fk-test-0123456789
  session_url: https://app.example/sessions/{{id}}
state:
  path: {state}
targets:
  team:
    type: webhook
    url: https://hooks.example.com/factory
reports:
  - name: daily
    schedule: "0 9 * * mon-fri"
    notify: team
  - name: weekly
    schedule: "0 9 * * mon"
    window: 7d
    group_by: team
    notify: team
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with two reports over a state database holding a simulated day.

    Minute 0 is 30 hours ago: `a` finished and `b` was interrupted within the last
    day; `c` finished 28 hours ago (inside the week, outside the day); `d` waits now.
    """
    state = tmp_path / "state.db"
    store = SqliteStore(state)
    h = History(store, base=datetime.now(UTC) - timedelta(hours=30))
    h.labels = {"a": {"team": "web"}}
    for sid in "abcd":
        h.poll(10, sid, "idle", created=0, credits=0)
    h.poll(60, "c", "running")
    h.poll(120, "c", "idle", completed=119, credits=4)
    h.poll(600, "a", "running")
    h.poll(700, "a", "idle", completed=690, credits=10)
    h.poll(800, "b", "running")
    h.poll(850, "b", "idle", credits=2)
    h.poll(900, "d", "pending")
    store.close()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(state=state))
    path.chmod(0o600)
    return path


def test_report_prints_the_days_content_as_text(config: Path) -> None:
    """The text names what finished, was interrupted and waits, each with its link."""
    code, out, err = run_cli("report", "daily", "-c", str(config))
    assert (code, err) == (EX_OK, "")
    lines = out.splitlines()
    assert (
        lines[0] == "Report daily: 1 finished, 1 interrupted, 1 waiting now, 2 started, 12 credits"
    )
    assert "Finished (1):" in lines
    assert "  - task-a (https://app.example/sessions/a)" in lines
    assert "Interrupted (1):" in lines
    assert "  - task-b (https://app.example/sessions/b)" in lines
    assert "Waiting now (1):" in lines
    assert not any("task-c" in line and "Finished" in line for line in lines)


def test_report_json_is_the_webhook_data_document(config: Path) -> None:
    """--json prints the document a webhook body's `data` carries, valid against the schema."""
    code, out, _ = run_cli("report", "weekly", "--json", "-c", str(config))
    assert code == EX_OK
    doc = json.loads(out)
    assert doc["report"] == "weekly"
    assert doc["counts"]["finished"] == 2  # the week includes c
    assert [s["id"] for s in doc["sessions"]["finished"]] == ["a", "c"]
    assert doc["credits"] == 16
    assert [g["value"] for g in doc["groups"]] == ["web", None]
    body = {
        "version": 1,
        "type": "report",
        "id": "report:weekly:x",
        "sequence": 1,
        "occurred_at": "2026-12-07T09:00:00Z",
        "rule": "report:weekly",
        "session": None,
        "data": doc,
    }
    assert schema_problems(body) == []


def test_window_flag_overrides_the_reports_window(config: Path) -> None:
    """--window 2h looks back two hours only: nothing finished in them."""
    code, out, _ = run_cli("report", "weekly", "--window", "2h", "--json", "-c", str(config))
    assert code == EX_OK
    doc = json.loads(out)
    assert doc["counts"]["finished"] == 0
    assert doc["counts"]["waiting"] == 1  # what is true now does not depend on the window
    assert doc["window"]["seconds"] == 7200


def test_since_last_starts_at_the_stored_last_run(config: Path, tmp_path: Path) -> None:
    """A since_last report reads its last run: after one 10 hours ago, a's finish is out."""
    state = tmp_path / "state.db"
    db = sqlite3.connect(state)
    with db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS report_runs(name TEXT PRIMARY KEY,"
            " scheduled_at REAL NOT NULL, recorded_at REAL NOT NULL)"
        )
        at = (datetime.now(UTC) - timedelta(hours=10)).timestamp()
        db.execute("INSERT INTO report_runs VALUES ('daily', ?, ?)", (at, at))
    db.close()
    code, out, _ = run_cli("report", "daily", "--json", "-c", str(config))
    assert code == EX_OK
    doc = json.loads(out)
    assert doc["counts"]["finished"] == 0
    assert 35_000 < doc["window"]["seconds"] < 37_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "monthly"], "unknown report 'monthly' (reports: daily, weekly)"),
        (["report", "daily", "--window", "soon"], "--window 'soon': expected a duration"),
    ],
)
def test_a_wrong_name_or_window_is_a_usage_error(
    config: Path, args: list[str], message: str
) -> None:
    """An unknown report names the known ones; a bad --window says what is expected."""
    code, out, err = run_cli(*args, "-c", str(config))
    assert (code, out) == (EX_USAGE, "")
    assert message in err


def test_no_state_database_is_a_clear_error(config: Path, tmp_path: Path) -> None:
    """Before the daemon ever ran there is nothing to report from: said, not a traceback."""
    code, _, err = run_cli("report", "daily", "--db", str(tmp_path / "none.db"), "-c", str(config))
    assert code == EX_CANTCREAT
    assert "no state database" in err
