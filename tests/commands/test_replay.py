"""`replay FILE.jsonl`: a recorded poll stream through the rules, printed; no state db made."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.commands.invoke import run_cli
from watcher.commands.exits import EX_OK, EX_USAGE


def body(
    status: str, updated: int, completed: int | None = None, session_id: str = "s1"
) -> dict[str, object]:
    """A session body for `session_id`."""
    found: dict[str, object] = {
        "sessionId": session_id,
        "title": "release",
        "status": status,
        "messageCount": 1,
        "createdAt": 1_000,
        "updatedAt": updated,
    }
    if completed is not None:
        found["completedAt"] = completed
    return found


def test_replay_prints_when_and_where_without_touching_the_state_db(
    config: Path, tmp_path: Path
) -> None:
    """A hand-written recording: one settled finish, printed at its settle time, no DB made."""
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
    lines = [
        {"at": t0.isoformat(), "session": "s1", "status": 200, "body": body("running", 1_000)},
        {
            "at": (t0 + timedelta(seconds=10)).isoformat(),
            "session": "s1",
            "status": 200,
            "body": body("idle", 2_000, 2_000),
        },
        {"at": (t0 + timedelta(seconds=20)).isoformat(), "session": "s1", "status": 404},
    ]
    recording = tmp_path / "polls.jsonl"
    recording.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, err = run_cli("replay", str(recording), "-c", str(config))
    assert (code, err) == (EX_OK, "")
    assert out.splitlines() == [
        "2026-11-30T12:00:12Z  ci  (rule done)  session.finished "
        + out.split("session.finished ")[1].split()[0]
    ]
    assert not (tmp_path / "state.db").exists()
    recording.write_text('{"at": "yesterday"}\n')
    code, _, err = run_cli("replay", str(recording), "-c", str(config))
    assert code == EX_USAGE
    assert err == f"factory-watcher: {recording}:1: not a recorded poll (ValueError)\n"


def test_replay_fires_time_based_rules_of_sessions_not_in_the_config(
    config: Path, tmp_path: Path
) -> None:
    """A recorded session the config does not list (a discovered one) is watched by the
    replay: its settled finish is printed, as for a configured one."""
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
    lines = [
        {
            "at": t0.isoformat(),
            "session": "d1",
            "status": 200,
            "body": body("running", 1_000, session_id="d1"),
        },
        {
            "at": (t0 + timedelta(seconds=10)).isoformat(),
            "session": "d1",
            "status": 200,
            "body": body("idle", 2_000, 2_000, session_id="d1"),
        },
        {"at": (t0 + timedelta(seconds=20)).isoformat(), "session": "d1", "status": 404},
    ]
    recording = tmp_path / "polls.jsonl"
    recording.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, err = run_cli("replay", str(recording), "-c", str(config))
    assert (code, err) == (EX_OK, "")
    assert [line.split("  ")[:3] for line in out.splitlines()] == [
        ["2026-11-30T12:00:12Z", "ci", "(rule done)"]
    ]
