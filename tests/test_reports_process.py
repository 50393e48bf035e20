"""`factory-watcher run` with a report every minute, killed around its scheduled times.

The daemon is a real subprocess on the real clock (there is no way, and there
should be none, to move a production daemon's clock), so this test waits for
real minute boundaries and takes two to three minutes. It SIGKILLs the daemon
just before a scheduled time and brings it back after that time passed, then
kills it just after the next one and restarts it at once, and finds exactly
one report per scheduled time at the webhook receiver, with no gap.
"""

from __future__ import annotations

import math
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.process import Daemon, secret_env, start_daemon, write_config
from tests.rig import Rig, running_rig, wait_for

pytestmark = pytest.mark.slow

REPORTS = """\
reports:
  - name: minutely
    schedule: "* * * * *"
    window: 10m
    notify: [ci]
"""
PREFIX = "report:minutely:"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def minute(epoch: float) -> datetime:
    """The minute boundary at or before `epoch`, aware UTC."""
    return datetime.fromtimestamp(math.floor(epoch / 60) * 60, tz=UTC)


def report_ids(rig: Rig) -> list[str]:
    """The id of every report the receiver accepted, in arrival order (repeats kept)."""
    return [
        r.json["id"]
        for r in rig.receiver.requests
        if r.status < 300 and isinstance(r.json, dict) and r.json.get("type") == "report"
    ]


def received(rig: Rig, at: datetime) -> bool:
    """Whether the report for scheduled time `at` has arrived."""
    return f"{PREFIX}{at.isoformat()}" in report_ids(rig)


def until(epoch: float) -> None:
    """Return once the wall clock reads `epoch` (polled, with a deadline)."""
    wait_for(lambda: time.time() >= epoch, max(epoch - time.time(), 0) + 5, "the wall clock")


def test_a_report_is_sent_once_per_minute_across_kills_around_its_times(
    rig: Rig, tmp_path: Path
) -> None:
    """SIGKILL before a time (restart after it) and just after one: one report each, no gap."""
    rig.sim.add_session("s1", title="a session", status="running")
    config = write_config(rig, tmp_path, ["s1"])
    config.write_text(config.read_text() + REPORTS)
    env = secret_env(rig)
    log = tmp_path / "daemon.log"

    started = time.time()
    daemon: Daemon = start_daemon(config, env, log)
    daemon.wait_for_log("report minutely: next run")
    wait_for(lambda: report_ids(rig), 20, "the first report")
    # Never ran: the time just before the start is caught up (or the next one, had it
    # passed by the time the daemon was up).
    first = datetime.fromisoformat(report_ids(rig)[0].removeprefix(PREFIX))
    assert first in (minute(started), minute(started) + timedelta(minutes=1))

    # Just before a scheduled time: killed 1.5 s before it, back 2 s after it.
    before = minute(time.time()) + timedelta(minutes=1)
    if before.timestamp() - time.time() < 5:
        before += timedelta(minutes=1)
    until(before.timestamp() - 1.5)
    daemon.stop(signal.SIGKILL)
    assert not received(rig, before)
    until(before.timestamp() + 2)
    daemon = start_daemon(config, env, log)
    wait_for(lambda: received(rig, before), 30, "the report missed while down")

    # Just after a scheduled time: killed half a second after it, restarted at once.
    after = before + timedelta(minutes=1)
    until(after.timestamp() + 0.5)
    daemon.stop(signal.SIGKILL)
    daemon = start_daemon(config, env, log)
    wait_for(lambda: received(rig, after), 30, "the report of the killed minute")

    last = after + timedelta(minutes=1)
    wait_for(lambda: received(rig, last), 90, "the report after the restarts")
    assert daemon.stop(signal.SIGTERM) == 0

    ids = report_ids(rig)
    expected = []
    at = first
    while at <= last:
        expected.append(f"{PREFIX}{at.isoformat()}")
        at += timedelta(minutes=1)
    assert sorted(set(ids)) == expected, daemon.text()
    # Exactly one report per time: one event and one row each in the store; a second
    # receipt of the same id is possible only for a send in flight at the kill.
    repeats = {i: n for i, n in Counter(ids).items() if n > 1}
    assert set(repeats) <= {f"{PREFIX}{after.isoformat()}"}, repeats
    assert all(n == 2 for n in repeats.values()), repeats
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        rows = db.execute(
            "SELECT event_id, COUNT(*), MIN(lane) FROM outbox WHERE event_id LIKE 'report:%'"
            " GROUP BY event_id ORDER BY event_id"
        ).fetchall()
        (last_run,) = db.execute(
            "SELECT scheduled_at FROM report_runs WHERE name='minutely'"
        ).fetchone()
    finally:
        db.close()
    assert rows == [(i, 1, "report:minutely") for i in expected]
    assert last_run >= last.timestamp()
    # The time passed while the daemon was down was sent late, by the restarted daemon.
    caught_up = next(
        line
        for line in daemon.text().splitlines()
        if f"report minutely for {before.isoformat()} ->" in line
    )
    assert " ago" in caught_up, caught_up
    assert "skipped" not in daemon.text()
    assert "Traceback" not in daemon.text()
