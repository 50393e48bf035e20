"""`replay FILE.jsonl`: a recorded poll stream through the rules, printed; no state db made."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.commands.invoke import run_cli
from watcher.commands.exits import EX_OK, EX_USAGE
from watcher.commands.replay import sessions_of
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.rulestate import digest_event


def body(
    status: str, updated: int, completed: int | None = None, session_id: str = "s1"
) -> dict[str, object]:
    """A session body for s1 (or `session_id`), titled release."""
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
        "2026-11-30T12:00:12Z  ci  (rule done)  nightly (s1)  session.finished "
        + out.split("session.finished ")[1].split()[0]
    ]
    assert not (tmp_path / "state.db").exists()
    recording.write_text('{"at": "yesterday"}\n')
    code, _, err = run_cli("replay", str(recording), "-c", str(config))
    assert code == EX_USAGE
    assert err == f"factory-watcher: {recording}:1: not a recorded poll (ValueError)\n"


def test_every_replayed_line_names_its_session_by_name_or_title_and_id(
    config: Path, tmp_path: Path
) -> None:
    """A configured session shows its name, another its title; both with their id."""
    t0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
    lines = []
    for offset, (status, updated) in enumerate((("running", 1_000), ("idle", 2_000))):
        for session_id in ("s1", "s9"):
            at = (t0 + timedelta(seconds=10 * offset)).isoformat()
            found = body(status, updated, updated if status == "idle" else None, session_id)
            lines.append({"at": at, "session": session_id, "status": 200, "body": found})
    recording = tmp_path / "polls.jsonl"
    recording.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, out, _ = run_cli("replay", str(recording), "--extra", "5s", "-c", str(config))
    assert code == EX_OK
    assert [line.split("  ")[3] for line in out.splitlines()] == ["nightly (s1)", "release (s9)"]
    code, out, _ = run_cli("replay", str(recording), "--json", "--extra", "5s", "-c", str(config))
    assert [json.loads(line)["about"] for line in out.splitlines()] == [
        "nightly (s1)",
        "release (s9)",
    ]


T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        (SessionRef("s1", title="release", name="nightly"), "nightly (s1)"),
        (SessionRef("s2", title="release"), "release (s2)"),
        (SessionRef("s3"), "s3"),
        (None, "(no session)"),
    ],
)
def test_sessions_of_names_the_session_and_its_id(
    session: SessionRef | None, expected: str
) -> None:
    """Name or title and id; the id alone when nothing else is known."""
    assert sessions_of(Event("evt_1", EventType.FINISHED, T0, session)) == expected


def test_a_replayed_digest_names_every_session_it_lists() -> None:
    """A digest is about several sessions: each is named, once, in order."""
    held = [
        (Event("evt_a", EventType.FINISHED, T0, SessionRef("s1", name="nightly")), "done"),
        (Event("evt_b", EventType.STARTED, T0, SessionRef("s2", title="release")), "begin"),
        (Event("evt_c", EventType.STARTED, T0, SessionRef("s1", name="nightly")), "begin"),
    ]
    digest = digest_event("t", "night", T0 + timedelta(hours=8), held)
    assert sessions_of(digest) == "digest of nightly (s1), release (s2)"


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
