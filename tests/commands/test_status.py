"""`status` and `backup` against a store a watcher wrote, in process."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.rig import Rig, running_rig
from watcher.commands.backup import BackupError, backup_database
from watcher.commands.cli import main
from watcher.commands.status import (
    StatusError,
    TargetStatus,
    read_status,
    render_text,
    to_json,
)
from watcher.core.settings import WatchedSession
from watcher.daemon import Watcher
from watcher.store import PollMark, StatusRows, TargetBacklog


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


async def watched_store(rig: Rig) -> Path:
    """A store after s1 finished a run, s2 was deleted and ops became a dead letter."""
    settings = rig.with_sessions("s1", "s2", "s3")
    rig.slack_hook.revoke()
    watcher = Watcher(settings)
    try:
        await watcher.poll_all()
        rig.sim.complete_run("s1")
        rig.sim.delete("s2")
        await watcher.poll_all()
        await watcher.deliver_due()
        await watcher.housekeeping()
    finally:
        await watcher.aclose()
        watcher.store.close()
    return settings.state_path


@pytest.mark.anyio
async def test_status_lists_sessions_outbox_and_dead_letters(rig: Rig) -> None:
    """Every watched session (a deleted one as gone), each target, every dead letter."""
    path = await watched_store(rig)
    report = read_status(path)
    document = to_json(report)
    sessions = {s["id"]: s for s in document["sessions"]}
    assert list(sessions) == ["s1", "s2", "s3"]
    assert sessions["s1"]["status"] == "idle"
    assert sessions["s1"]["last_notification"] is not None
    assert sessions["s2"]["status"] == "gone"
    assert sessions["s2"]["last_poll_outcome"] == "not_found"
    assert all(s["last_poll"] and s["next_poll"] is None for s in sessions.values())
    assert document["api"]["state"] == "up"
    assert [(d["target"], d["event"], d["session"]) for d in document["dead_letters"]] == [
        ("ops", "session.deleted", "s2")
    ]
    ops = next(t for t in document["outbox"] if t["target"] == "ops")
    assert (ops["pending"], ops["dead"]) == (0, 1)
    assert "invalid_token" in ops["last_error"]
    text = render_text(report)
    assert "gone (404)" in text
    assert "dead letters (1;" in text
    assert json.loads(json.dumps(document)) == document


@pytest.mark.anyio
async def test_status_reads_while_a_writer_holds_the_database(rig: Rig) -> None:
    """A write transaction in progress (WAL) neither blocks status nor is blocked by it."""
    path = await watched_store(rig)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE meta SET value='down' WHERE key='api_state'")
        assert read_status(path).api_state == "up"  # the committed state
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert read_status(path).api_state == "down"


def test_status_of_a_missing_database_says_so(tmp_path: Path) -> None:
    """No database: a clear error, and nothing created."""
    with pytest.raises(StatusError, match="no state database at"):
        read_status(tmp_path / "nope.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_status_and_backup_commands_by_database_path(rig: Rig, tmp_path: Path) -> None:
    """`status --db` needs no config; `backup` copies once and refuses to overwrite."""
    path = await watched_store(rig)
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--json", "--db", str(path)], out=out, err=err) == 0
    assert [s["id"] for s in json.loads(out.getvalue())["sessions"]] == ["s1", "s2", "s3"]
    copy = tmp_path / "copy.db"
    out = io.StringIO()
    assert main(["backup", str(copy), "--db", str(path)], out=out, err=err) == 0
    assert "integrity check ok" in out.getvalue()
    before = copy.read_bytes()
    err = io.StringIO()
    assert main(["backup", str(copy), "--db", str(path)], out=out, err=err) == 73
    assert "already exists" in err.getvalue()
    assert copy.read_bytes() == before
    assert read_status(copy).dead_letters == read_status(path).dead_letters


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "exists.db").write_text("keep me"), "already exists"),
        (lambda d: None, "no state database"),
    ],
    ids=["destination-exists", "no-source"],
)
def test_backup_refusals_write_nothing(tmp_path: Path, make: object, message: str) -> None:
    """A refused backup leaves the directory as it was."""
    make(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BackupError, match=message):
        backup_database(tmp_path / "missing-source.db", tmp_path / "exists.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_database_no_daemon_wrote_reads_as_never_ran(tmp_path: Path) -> None:
    """Tables without the daemon's bookkeeping: no sessions, and a daemon that never ran."""
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "CREATE TABLE sessions (session_id TEXT, state TEXT, stored_at REAL);"
        "CREATE TABLE events (id TEXT, session_id TEXT, type TEXT, occurred_at REAL,"
        " body TEXT, recorded_at REAL);"
        "CREATE TABLE outbox (id INTEGER, event_id TEXT, target TEXT, rule TEXT, lane TEXT,"
        " status TEXT, attempts INTEGER, created_at REAL, next_attempt_at REAL,"
        " last_error TEXT, finished_at REAL, handle TEXT);"
    )
    db.close()
    report = read_status(tmp_path / "state.db")
    assert report.sessions == ()
    assert not report.daemon_running
    assert "never ran" in render_text(report)


def test_status_without_a_readable_config_points_at_db(tmp_path: Path) -> None:
    """A config whose secrets are not here (systemd credentials) fails with a hint to --db."""
    config = tmp_path / "config.yaml"
    config.write_text("factory:\n  api_key_file: factory-api-key\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "-c", str(config)], out=out, err=err) == 78
    assert "factory-api-key" in err.getvalue()
    assert "--db PATH reads the state database without the config" in err.getvalue()


def test_the_report_is_built_from_what_the_store_read(tmp_path: Path) -> None:
    """`status` asks the read-only store for rows and builds the report from them alone."""
    at = datetime(2026, 11, 28, 12, tzinfo=UTC)
    rows = StatusRows(
        meta={"heartbeat_at": f"{at.timestamp():.3f}", "api_state": "down", "api_reason": "503"},
        states={"s1": ("running", False)},
        since={"s1": at},
        polls={"s1": PollMark("s1", at, "changed", None)},
        notified={},
        targets=(TargetBacklog("ops", 2, 1, at, 0, None),),
    )

    class Rows:
        """A read-only store that has only these rows."""

        closed = False

        def read_status(self, configured: Sequence[str] = ()) -> StatusRows:
            assert list(configured) == ["s1"]  # the configured sessions stand in for meta's
            return rows

        def copy_to(self, destination: Path) -> int:
            raise AssertionError("status copies nothing")

        def close(self) -> None:
            Rows.closed = True

    configured = [WatchedSession(id="s1", name="one")]
    report = read_status(tmp_path / "any.db", configured, now=at, opener=lambda _: Rows())
    assert Rows.closed
    assert report.daemon_running
    assert (report.api_state, report.api_reason) == ("down", "503")
    [session] = report.sessions
    assert (session.id, session.name, session.status, session.last_poll) == (
        "s1",
        "one",
        "running",
        at,
    )
    assert report.targets == (TargetStatus("ops", 2, 1, at, 0, None),)
