"""`status` lists each scheduled report: its last run from the store, its next from the config."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.store.conformance.test_reports import report
from watcher.commands.cli import main
from watcher.commands.status import ReportStatus, read_status, render_text, to_json
from watcher.core.rules import Route
from watcher.core.settings import ReportSpec
from watcher.store import SqliteStore

NOW = datetime(2026, 12, 1, 10, 17, 30, tzinfo=UTC)  # a Tuesday
DAILY = ReportSpec(name="daily", schedule="0 9 * * mon-fri", timezone="Europe/Berlin")
HOURLY = ReportSpec(name="hourly", schedule="0 * * * *")


def stored_runs(path: Path, runs: dict[str, datetime]) -> Path:
    """A state database where each of `runs` ran for its time."""
    store = SqliteStore(path)
    try:
        for name, at in runs.items():
            e = report(name, at)
            store.record_report(name, at, e, [(e, Route(name, "hook"))], at)
    finally:
        store.close()
    return path


def test_each_report_shows_its_last_and_next_run(tmp_path: Path) -> None:
    """Last run as stored; next run from the cron expression in the report's timezone."""
    path = stored_runs(tmp_path / "state.db", {"daily": datetime(2026, 12, 1, 8, tzinfo=UTC)})
    status = read_status(path, reports=[DAILY, HOURLY], now=NOW)
    assert status.reports == (
        # 09:00 in Berlin is 08:00 UTC in winter; the next is Wednesday's.
        ReportStatus(
            "daily",
            "0 9 * * mon-fri",
            "Europe/Berlin",
            datetime(2026, 12, 1, 8, tzinfo=UTC),
            datetime(2026, 12, 2, 8, tzinfo=UTC),
        ),
        ReportStatus("hourly", "0 * * * *", "UTC", None, datetime(2026, 12, 1, 11, tzinfo=UTC)),
    )
    document = to_json(status)["reports"]
    assert document[0] == {
        "name": "daily",
        "schedule": "0 9 * * mon-fri",
        "timezone": "Europe/Berlin",
        "configured": True,
        "last_run": "2026-12-01T08:00:00+00:00",
        "next_run": "2026-12-02T08:00:00+00:00",
    }
    assert document[1]["last_run"] is None
    text = render_text(status)
    assert "reports (2):" in text
    daily = next(line for line in text.splitlines() if line.strip().startswith("daily"))
    assert "2026-12-01 08:00 UTC (2h ago)" in daily
    assert "2026-12-02 08:00 UTC (in 22h)" in daily
    hourly = next(line for line in text.splitlines() if line.strip().startswith("hourly"))
    assert "never" in hourly
    assert "2026-12-01 11:00 UTC (in 42m)" in hourly


def test_a_report_removed_from_the_config_still_shows_its_last_run(tmp_path: Path) -> None:
    """A stored run of a report the config no longer has: listed, with no next run."""
    path = stored_runs(tmp_path / "state.db", {"weekly": NOW - timedelta(days=3)})
    status = read_status(path, reports=[HOURLY], now=NOW)
    assert [r.name for r in status.reports] == ["hourly", "weekly"]
    assert status.reports[1] == ReportStatus("weekly", None, None, NOW - timedelta(days=3), None)
    assert "not in the config" in render_text(status)
    assert to_json(status)["reports"][1]["configured"] is False


def test_no_reports_no_section(tmp_path: Path) -> None:
    """Without reports, configured or stored, the text has no reports section."""
    path = stored_runs(tmp_path / "state.db", {})
    status = read_status(path, now=NOW)
    assert status.reports == ()
    assert "reports (" not in render_text(status)
    assert to_json(status)["reports"] == []


def test_status_with_only_the_database_lists_the_stored_runs(tmp_path: Path) -> None:
    """`status --db` without a config: each stored report's last run."""
    path = stored_runs(tmp_path / "state.db", {"daily": NOW - timedelta(hours=2)})
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--json", "--db", str(path)], out=out, err=err) == 0
    [daily] = json.loads(out.getvalue())["reports"]
    assert (daily["name"], daily["configured"], daily["next_run"]) == ("daily", False, None)
    assert daily["last_run"] == (NOW - timedelta(hours=2)).isoformat()


def test_status_with_the_config_lists_its_reports_next_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status -c config`: the config's reports with their next run, and the stored last run."""
    path = stored_runs(tmp_path / "state.db", {"daily": NOW - timedelta(hours=2)})
    config = tmp_path / "config.yaml"
    config.write_text(
        "factory:\n  api_key: ${FW_KEY}\n"
        f"state:\n  path: {path}\n"
        "targets:\n  hook:\n    type: webhook\n    url: https://hooks.example.com/x\n"
        "reports:\n"
        "  - name: daily\n    schedule: '0 9 * * mon-fri'\n    timezone: Europe/Berlin\n"
        "    notify: [hook]\n"
    )
    monkeypatch.setenv("FW_KEY", "fk-status-reports-key")
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--json", "-c", str(config)], out=out, err=err) == 0, err.getvalue()
    [daily] = json.loads(out.getvalue())["reports"]
    assert (daily["schedule"], daily["timezone"], daily["configured"]) == (
        "0 9 * * mon-fri",
        "Europe/Berlin",
        True,
    )
    assert daily["last_run"] == (NOW - timedelta(hours=2)).isoformat()
    assert daily["next_run"] is not None
    assert datetime.fromisoformat(daily["next_run"]).astimezone(UTC).hour in (7, 8)
