"""`factory-watcher run` as a subprocess: deliveries, SIGTERM, restart, catch-up."""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.process import cli, secret_env, start_daemon, write_config
from tests.rig import API_KEY, SLACK_TOKEN, WEBHOOK_SECRET, Rig, running_rig, wait_for
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.rules import Route
from watcher.store import SqliteStore

pytestmark = pytest.mark.slow


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback, Slack enforcing one message per second."""
    with running_rig(tmp_path, slack_interval=1.0) as running:
        yield running


def ci_events(rig: Rig) -> list[tuple[str, str, str]]:
    """(type, session, rule) of every accepted webhook."""
    return [
        (r.json["type"], r.json["session"]["id"], r.json["rule"])
        for r in rig.receiver.requests
        if r.status < 300
    ]


def test_run_delivers_stops_and_catches_up_without_duplicates(rig: Rig, tmp_path: Path) -> None:
    """A dozen transitions are delivered once each, across a SIGTERM and a restart."""
    ids = ["a", "b", "c", "d", "e", "f"]
    for sid in ids:
        rig.sim.add_session(sid, title=f"<!channel> session {sid}", status="running")
    config = write_config(rig, tmp_path, ids)
    env = secret_env(rig)
    log = tmp_path / "daemon.log"

    daemon = start_daemon(config, env, log)
    daemon.wait_for_log("watching 6 session(s)")
    wait_for(lambda: all(rig.sim.request_count(s) >= 1 for s in ids), what="first polls")
    wait_for(lambda: "session.discovered f" in daemon.text(), what="discovery of f")
    rig.sim.complete_run("a")
    rig.sim.complete_run("b")
    rig.sim.archive("c")
    rig.sim.delete("d")
    rig.sim.interrupt("e")
    rig.sim.add_messages("f", 4)
    wait_for(
        lambda: (
            len(rig.slack.messages) == 3
            and len(ci_events(rig)) == 5
            and len(rig.slack_hook.messages) == 2
        ),
        timeout=20,
        what="first deliveries",
    )
    assert daemon.stop() == 0
    assert "stopped;" in daemon.text()

    rig.sim.complete_run("f")  # while the watcher is down
    rig.sim.archive("a")
    daemon = start_daemon(config, env, log)
    wait_for(
        lambda: (
            len(rig.slack.messages) == 4
            and len(ci_events(rig)) == 7
            and len(rig.slack_hook.messages) == 3
        ),
        timeout=20,
        what="catch-up deliveries",
    )
    # Give it a few more polls to prove nothing is sent twice.
    polls = rig.sim.request_count("f")
    wait_for(lambda: rig.sim.request_count("f") >= polls + 5, what="more polls")
    assert daemon.stop(signal.SIGINT) == 0

    assert sorted(m.text.split()[1] for m in rig.slack.messages) == ["&lt;!channel&gt;"] * 4
    assert Counter(ci_events(rig)) == Counter(
        [
            ("session.status_changed", "a", "finished"),
            ("session.completed", "a", "completed"),
            ("session.status_changed", "b", "finished"),
            ("session.completed", "b", "completed"),
            ("session.status_changed", "e", "finished"),
            ("session.status_changed", "f", "finished"),
            ("session.completed", "f", "completed"),
        ]
    )
    assert all(r.signature_valid for r in rig.receiver.requests)
    assert len({r.headers["webhook-id"] for r in rig.receiver.requests}) == 7
    # Webhook events v1: each session's sequence kept rising across the restart.
    by_session: dict[str, list[int]] = {}
    for r in rig.receiver.requests:
        by_session.setdefault(r.json["session"]["id"], []).append(r.json["sequence"])
    assert len(by_session["f"]) == 2
    for sequences in by_session.values():
        assert sequences == sorted(set(sequences)), sequences
    hook_texts = sorted(m.payload["text"] for m in rig.slack_hook.messages)
    assert [("archived" in t, "deleted" in t) for t in hook_texts].count((True, False)) == 2
    assert rig.slack.rate_limited == 0
    for message in rig.slack.messages:
        assert "<!channel>" not in message.text

    text = daemon.text()
    for canary in (API_KEY, SLACK_TOKEN, WEBHOOK_SECRET, env["FW_SLACK_WEBHOOK_URL"]):
        assert canary not in text
        assert canary.encode() not in (tmp_path / "state.db").read_bytes()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    pending = db.execute("SELECT COUNT(*) FROM outbox WHERE status != 'delivered'").fetchone()
    assert pending[0] == 0


POISONED = (
    b'{"sessionId": "p", "status": "idle", "messageCount": 1, "createdAt": 1,'
    b' "updatedAt": 2, "completedAt": 126144000000000000000}'
)


def test_once_with_a_poisoned_body_exits_1_without_a_traceback(rig: Rig, tmp_path: Path) -> None:
    """`factory-watcher once` names the unreadable session, exits 1, and prints no traceback."""
    rig.sim.add_session("a", status="running")
    rig.sim.serve_raw("p", POISONED)
    config = write_config(rig, tmp_path, ["a", "p"])
    for flags in ([], ["--dry-run"]):
        done = cli(["once", *flags, "-c", str(config)], secret_env(rig), tmp_path)
        assert done.returncode == 1, done.stderr
        assert "p: poll failed: unreadable session: completedAt out of range" in done.stdout
        assert "Traceback" not in done.stdout + done.stderr


def test_a_restart_with_poisoned_rows_queued_comes_up_and_dead_letters_them(
    rig: Rig, tmp_path: Path
) -> None:
    """Queued rows that cannot be read are dead-lettered; old surrogate rows and new work arrive."""
    rig.sim.add_session("s1", title="\ud800 lone surrogate", status="running")
    config = write_config(rig, tmp_path, ["s1"])
    store = SqliteStore(tmp_path / "state.db")
    events = [
        Event(
            "evt_old",
            EventType.COMPLETED,
            datetime.now(UTC),
            SessionRef("old", "T"),
            {"completed_at": datetime.now(UTC).isoformat(), "duration_s": 1.0},
        ),
        Event("evt_broken", EventType.COMPLETED, datetime.now(UTC), SessionRef("broken")),
    ]
    store.record_events(events, [(e, Route("completed", "ci")) for e in events], datetime.now(UTC))
    store.close()
    db = sqlite3.connect(tmp_path / "state.db")
    with db:  # as a store written before the fix, or by a broken writer, may hold them
        db.execute(
            'UPDATE events SET body=replace(body, \'"title": "T"\', \'"title": "\\ud800 T"\')'
            " WHERE id='evt_old'"
        )
        db.execute("UPDATE events SET body='{\"id\": ' WHERE id='evt_broken'")
    db.close()

    daemon = start_daemon(config, secret_env(rig), tmp_path / "daemon.log")
    daemon.wait_for_log("watching 1 session(s)")
    daemon.wait_for_log("dead letter session.completed broken -> ci")
    wait_for(lambda: "session.discovered s1" in daemon.text(), what="discovery of s1")
    rig.sim.complete_run("s1")
    wait_for(lambda: len(ci_events(rig)) == 3, what="old row, then s1's two events")
    assert daemon.process.poll() is None  # still running
    assert daemon.stop() == 0

    titles = sorted(r.json["session"]["title"] for r in rig.receiver.requests if r.status < 300)
    assert titles == ["\ufffd T", "\ufffd lone surrogate", "\ufffd lone surrogate"]
    text = daemon.text()
    assert text.count("Traceback") == 1  # the dead letter's cause, logged once
    db = sqlite3.connect(tmp_path / "state.db")
    rows = db.execute("SELECT status, last_error FROM outbox WHERE status='dead'").fetchall()
    db.close()
    assert len(rows) == 1
    assert rows[0][1].startswith("stored event cannot be read: JSONDecodeError")
