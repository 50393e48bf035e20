"""The operator commands on a PostgreSQL state (`state_url`): mute, explain, outbox, status,
doctor's state check, `report NAME`, and `backup`, which points to pg_dump.

Settings are built directly: reading `state.url` from a config file is the
config's own job (and its tests').
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.core.reportsim import History
from tests.rig import make_settings
from watcher.commands.doctor import inspect_database
from watcher.commands.exits import EX_FAILURE, EX_OK, EX_USAGE
from watcher.commands.explain import explain_command
from watcher.commands.mute import mute_command, unmute_command
from watcher.commands.operations import _postgres
from watcher.commands.outbox import _outbox
from watcher.commands.report import report_command
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.core.secret import Secret
from watcher.core.settings import ReportSpec, Settings, WatchedSession
from watcher.store.open import open_read_only_for, open_store, state_location
from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore
from watcher.store.sqlite import SqliteReadOnlyStore, SqliteStore

pytestmark = pytest.mark.postgres
PASSWORD = "canary-db-password-93c1"


def pg_settings(tmp_path: Path, url: str) -> Settings:
    """The rig's settings with the state in PostgreSQL at `url`."""
    base = make_settings("http://127.0.0.1:1", "", "", "", tmp_path / "unused.db")
    return replace(base, state_url=Secret(url), sessions=(WatchedSession("s1"),))


def namespace(**values: object) -> argparse.Namespace:
    """A parsed command line with these values."""
    return argparse.Namespace(**values)


def test_open_store_picks_the_configured_backend(tmp_path: Path, pg_url: str) -> None:
    """state_url: PostgreSQL (named without password); otherwise SQLite at state_path."""
    settings = pg_settings(tmp_path, pg_url)
    store = open_store(settings)
    try:
        assert isinstance(store, PostgresStore)
        assert store.location == state_location(settings)
    finally:
        store.close()
    reader = open_read_only_for(settings)
    assert isinstance(reader, PostgresReadOnlyStore)
    reader.close()
    sqlite = replace(settings, state_url=None)
    local = open_store(sqlite)
    assert isinstance(local, SqliteStore)
    local.close()
    assert isinstance(open_read_only_for(sqlite), SqliteReadOnlyStore)


def test_mute_and_unmute_write_to_the_database(tmp_path: Path, pg_url: str) -> None:
    """`mute`, `mute --list`, `unmute` on PostgreSQL, as on SQLite."""
    settings = pg_settings(tmp_path, pg_url)
    out = io.StringIO()
    args = dict(session="s1", rule=None, duration=None, reason="deploy")
    assert mute_command(settings, namespace(list=False, **args), out, io.StringIO()) == EX_OK
    assert mute_command(settings, namespace(list=True, **args), out, io.StringIO()) == EX_OK
    assert unmute_command(settings, namespace(session="s1", rule=None), out, io.StringIO()) == 0
    assert out.getvalue().splitlines() == [
        "muted session s1 until unmuted",
        "session s1 until unmuted (deploy)",
        "unmuted session s1",
    ]
    assert not settings.state_path.exists()


def test_outbox_explain_and_status_read_the_database(tmp_path: Path, pg_url: str) -> None:
    """What a daemon recorded is listed, explained and shown; the password never is."""
    settings = pg_settings(tmp_path, f"{pg_url} password={PASSWORD}")  # trust auth ignores it
    store = open_store(settings)
    e = event(id="e1", session=ref(id="s1"))
    store.record("s1", snap(), [e], [(e, Route("finished", "ci"))], T0)
    (row,) = store.due("ci", T0, 10)
    store.mark_dead(row.id, T0, "HTTP 410")
    out = io.StringIO()
    assert _outbox(store, "list", [], None, out) == EX_OK  # closes the store
    assert '"status": "dead"' in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "0 pending, 0 delivered, 1 dead"

    explained = io.StringIO()
    args = namespace(session="s1", json=True)
    assert explain_command(settings, args, explained, io.StringIO()) == EX_OK
    assert '"id": "s1"' in explained.getvalue()

    shown, err = io.StringIO(), io.StringIO()
    assert _postgres(namespace(command="status", json=True), settings, shown, err) == EX_OK
    text = shown.getvalue()
    assert state_location(settings) in text
    assert '"dead": 1' in text
    assert PASSWORD not in text + err.getvalue()


def test_backup_of_a_postgresql_state_says_to_use_pg_dump(tmp_path: Path, pg_url: str) -> None:
    """A usage error with the way to do it, no traceback and no password."""
    settings = pg_settings(tmp_path, f"{pg_url} password={PASSWORD}")
    out, err = io.StringIO(), io.StringIO()
    code = _postgres(namespace(command="backup", json=False), settings, out, err)
    assert code == EX_USAGE
    assert "pg_dump" in err.getvalue()
    assert state_location(settings) in err.getvalue()
    assert PASSWORD not in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_status_of_an_unreachable_database_is_a_clean_failure(tmp_path: Path) -> None:
    """No server there: one line naming the database, exit 1, no password."""
    settings = pg_settings(tmp_path, f"postgresql://fw:{PASSWORD}@127.0.0.1:1/state")
    err = io.StringIO()
    assert _postgres(namespace(command="status", json=False), settings, io.StringIO(), err) == (
        EX_FAILURE
    )
    assert err.getvalue().startswith("factory-watcher: cannot read state database")
    assert PASSWORD not in err.getvalue()


def test_doctor_checks_the_postgresql_state(tmp_path: Path, pg_url: str) -> None:
    """Opened and migrated as the daemon would: healthy; an unreachable one is an error."""
    seen = inspect_database(pg_settings(tmp_path, pg_url))
    assert (seen.exists, seen.healthy, seen.error) == (True, True, None)
    bad = inspect_database(pg_settings(tmp_path, "postgresql://fw@127.0.0.1:1/state"))
    assert bad.error is not None
    assert bad.path == "postgresql://fw@127.0.0.1:1/state"


def test_report_prints_a_report_from_a_postgresql_history(tmp_path: Path, pg_url: str) -> None:
    """`report NAME` reads the PostgreSQL state: what finished and was interrupted, linked."""
    settings = replace(
        pg_settings(tmp_path, f"{pg_url} password={PASSWORD}"),
        reports=(ReportSpec(name="daily", schedule="0 9 * * mon-fri", window=timedelta(days=1)),),
    )
    store = open_store(settings)
    try:
        h = History(store, base=datetime.now(UTC) - timedelta(hours=30))
        for sid in "abc":
            h.poll(10, sid, "idle", created=0, credits=0)
        h.poll(60, "c", "running")  # c finishes 28 hours ago: outside the day
        h.poll(120, "c", "idle", completed=119, credits=4)
        h.poll(600, "a", "running")
        h.poll(700, "a", "idle", completed=690, credits=10)
        h.poll(800, "b", "running")
        h.poll(850, "b", "idle", credits=2)
    finally:
        store.close()
    out, err = io.StringIO(), io.StringIO()
    args = namespace(name="daily", window=None, json=False, db=None)
    assert report_command(settings, args, out, err) == EX_OK
    lines = out.getvalue().splitlines()
    assert lines[0] == "Report daily: 1 finished, 1 interrupted, 2 started, 12 credits"
    link = settings.factory.session_url
    assert link is not None
    assert f"  - task-a ({link.replace('{id}', 'a')})" in lines[lines.index("Finished (1):") :]
    assert f"  - task-b ({link.replace('{id}', 'b')})" in lines[lines.index("Interrupted (1):") :]
    assert not any("task-c" in line for line in lines)
    assert not settings.state_path.exists()  # nothing read or made in SQLite
    assert PASSWORD not in out.getvalue() + err.getvalue()


def test_report_and_status_on_postgresql_show_the_report_runs(tmp_path: Path, pg_url: str) -> None:
    """since_last starts at the stored run; `status` lists its last and next runs."""
    daily = ReportSpec(name="daily", schedule="0 9 * * mon-fri", window=None)
    settings = replace(pg_settings(tmp_path, pg_url), reports=(daily,))
    last = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    store = open_store(settings)
    try:
        e = Event("report:daily", EventType.REPORT, last, None, {"report": "daily"})
        store.record_report("daily", last, e, [(e, Route("report:daily", "hook"))], last)
    finally:
        store.close()
    out = io.StringIO()
    args = namespace(name="daily", window=None, json=True, db=None)
    assert report_command(settings, args, out, io.StringIO()) == EX_OK
    assert datetime.fromisoformat(json.loads(out.getvalue())["window"]["start"]) == last
    shown = io.StringIO()
    assert _postgres(namespace(command="status", json=True), settings, shown, io.StringIO()) == 0
    (listed,) = json.loads(shown.getvalue())["reports"]
    assert listed["last_run"] == last.isoformat()
    assert listed["next_run"] is not None
