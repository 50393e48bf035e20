"""Two `factory-watcher run` replicas as processes on the real PostgreSQL server: a leader
paused past its lease (SIGSTOP) commits nothing after it resumes and reports standby;
SIGTERM hands over to the standby at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.process import Daemon, secret_env, start_daemon, write_config
from tests.rig import Rig, completed, running_rig, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ENDPOINT_LINE = re.compile(r"metrics and health on http://127\.0\.0\.1:(\d+)/metrics")
SESSIONS = ("s1", "s2", "s3")
# Every table write is noted with the writer's application_name (each replica sets its
# own through PGAPPNAME), so a test can tell which process committed what, and when.
WRITE_LOG = """
CREATE TABLE IF NOT EXISTS write_log (
    app TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, tbl TEXT NOT NULL, op TEXT NOT NULL
);
CREATE OR REPLACE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO write_log VALUES (
        current_setting('application_name'), clock_timestamp(), TG_TABLE_NAME, TG_OP);
    RETURN NULL;
END $$;
"""


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def pg_config(rig: Rig, directory: Path, pg_url: str) -> Path:
    """The process tests' config, with the state on PostgreSQL and short leases."""
    params = conninfo_to_dict(pg_url)
    url = f"postgresql://{params['user']}@127.0.0.1:{params['port']}/{params['dbname']}"
    for sid in SESSIONS:
        rig.sim.add_session(sid, title=f"session {sid}", status="running")
    path = write_config(rig, directory, list(SESSIONS))
    text = re.sub(
        r"state:\n  path: [^\n]*\n",
        f"state:\n  url: {url}\n  lease_ttl: 4s\n  renew_every: 500ms\n",
        path.read_text(),
    )
    path.write_text(text + "http:\n  listen: 127.0.0.1:0\n")
    return path


def start(rig: Rig, config: Path, name: str) -> Daemon:
    """A replica whose database connections say `name`, logging JSON lines."""
    env = {**secret_env(rig), "PGAPPNAME": name, "FACTORY_WATCHER_LOG_FORMAT": "json"}
    return start_daemon(config, env, config.parent / f"{name}.log")


def records(daemon: Daemon) -> list[dict[str, str]]:
    """The daemon's log records so far."""
    found = []
    for line in daemon.text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def first_at(daemon: Daemon, needle: str) -> datetime:
    """When the daemon first logged a record containing `needle`."""
    for record in records(daemon):
        if needle in record["event"]:
            return datetime.fromisoformat(record["ts"])
    raise AssertionError(f"no {needle!r} in the log:\n{daemon.text()}")


def get(daemon: Daemon, path: str) -> tuple[int, str]:
    """GET `path` from the daemon's endpoint: status and body."""
    match = ENDPOINT_LINE.search(daemon.text())
    assert match is not None, daemon.text()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(daemon: Daemon, name: str) -> float:
    """One unlabelled sample of the daemon's /metrics."""
    _, body = get(daemon, "/metrics")
    for line in body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def two_replicas(rig: Rig, config: Path) -> tuple[Daemon, Daemon]:
    """Replica a, started first so it leads, and replica b standing by."""
    a = start(rig, config, "replica-a")
    a.wait_for_log("leader: holder", timeout=30)
    b = start(rig, config, "replica-b")
    b.wait_for_log("leader is", timeout=30)
    return a, b


def note_writes(pg_url: str) -> None:
    """Put the write log's trigger on every table of the schema but the lease's."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(WRITE_LOG)
        tables = db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename NOT IN ('leader_lease', 'write_log')"
        ).fetchall()
        for (table,) in tables:
            db.execute(
                f"CREATE TRIGGER note_write AFTER INSERT OR UPDATE OR DELETE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION note_write()"
            )


def writes_since(pg_url: str, app: str, since: datetime) -> list[tuple[str, str]]:
    """(table, operation) of every committed write by `app` at or after `since`."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        rows = db.execute(
            "SELECT tbl, op FROM write_log WHERE app = %s AND at >= %s", (app, since)
        ).fetchall()
    return [(str(t), str(o)) for t, o in rows]


def database_now(pg_url: str) -> datetime:
    """The database's clock now."""
    with psycopg.connect(pg_url, autocommit=True) as db:
        row = db.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


def test_a_leader_paused_past_its_lease_commits_nothing_after_it_resumes(
    rig: Rig, tmp_path: Path, pg_url: str
) -> None:
    """SIGSTOP the leader: the standby takes over and delivers; SIGCONT: the old leader
    reports standby (leader 0 on /metrics) and no write of it lands after it resumed."""
    config = pg_config(rig, tmp_path, pg_url)
    a, b = two_replicas(rig, config)
    try:
        wait_for(lambda: all(rig.sim.request_count(s) >= 1 for s in SESSIONS), 20, "polls")
        note_writes(pg_url)
        rig.sim.complete_run("s1")
        wait_for(lambda: completed(rig, "s1") == 1, 20, "s1 delivered by a")
        assert metric(a, "factory_watcher_leader") == 1
        status, body = get(b, "/readyz")
        assert (status, body.split(" ")[0]) == (200, "standby")
        assert get(b, "/healthz")[0] == 200
        assert metric(b, "factory_watcher_leader") == 0

        os.kill(a.process.pid, signal.SIGSTOP)
        try:
            b.wait_for_log("leader: holder", timeout=30)
            rig.sim.complete_run("s2")
            wait_for(lambda: completed(rig, "s2") == 1, 20, "s2 delivered by b")
            resumed = database_now(pg_url)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        rig.sim.complete_run("s3")
        wait_for(lambda: "stepped down" in a.text(), 10, "a steps down")
        assert metric(a, "factory_watcher_leader") == 0
        status, body = get(a, "/readyz")
        assert body.startswith("standby"), body
        wait_for(lambda: completed(rig, "s3") == 1, 20, "s3 delivered by b")
        assert metric(b, "factory_watcher_leader") == 1
        assert writes_since(pg_url, "replica-a", resumed) == []
        assert writes_since(pg_url, "replica-b", resumed) != []  # the log does see writes
        assert [completed(rig, s) for s in SESSIONS] == [1, 1, 1]
        print(
            "paused leader: fenced writes",
            metric(a, "factory_watcher_fenced_writes_total"),
            "| step-down:",
            [r["event"] for r in records(a) if "stepped down" in r["event"]],
        )
    finally:
        for daemon in (a, b):
            if daemon.process.poll() is None:
                daemon.stop()


def test_sigterm_hands_the_lead_to_the_standby_at_once(
    rig: Rig, tmp_path: Path, pg_url: str
) -> None:
    """SIGTERM the leader: it drains, resigns and exits 0; the standby, woken by the
    NOTIFY, leads (well before the lease would have expired) and delivers."""
    config = pg_config(rig, tmp_path, pg_url)
    a, b = two_replicas(rig, config)
    try:
        # s1's state is stored before the handover: its completion is then a change.
        wait_for(lambda: rig.sim.request_count("s1") >= 2, 20, "s1 polled")
        assert a.stop() == 0
        b.wait_for_log("leader: holder", timeout=30)
        resigned = first_at(a, "lease resigned")
        signalled = first_at(a, "received SIGTERM")
        leads = [
            datetime.fromisoformat(r["ts"])
            for r in records(b)
            if r["event"].startswith("leader: holder")
        ]
        assert signalled <= resigned <= leads[0]
        handover = (leads[0] - signalled).total_seconds()
        print(f"handover_s={handover:.3f} (SIGTERM to the standby leading)")
        assert handover < 10  # generous: the lease itself would take 4 s to expire
        rig.sim.complete_run("s1")
        wait_for(lambda: completed(rig, "s1") == 1, 20, "s1 delivered by b")
    finally:
        for daemon in (a, b):
            if daemon.process.poll() is None:
                daemon.stop()


def test_a_replica_refuses_a_newer_schema_at_start(rig: Rig, tmp_path: Path, pg_url: str) -> None:
    """A database written by a newer release stops a replica at start: exit 78, the
    reason logged, nothing touched (no lease taken)."""
    from watcher.store.postgres import PostgresStore

    PostgresStore(pg_url).close()  # the current schema, then "a newer release" bumps it
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    daemon = start(rig, pg_config(rig, tmp_path, pg_url), "replica-a")
    assert daemon.process.wait(30) == 78
    assert "999" in daemon.text()
    with psycopg.connect(pg_url, autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM leader_lease").fetchone()
    assert row == (0,)
