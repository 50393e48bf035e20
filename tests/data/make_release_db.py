"""Write `state-release-0.1.db`: a state database as release 0.1 leaves it.

How the committed fixture was made (run it with the release's code, not this
checkout's, so the file is what that release writes):

    git -C /work/main worktree add /work/wt/oldrel 0513623
    PYTHONPATH=/work/wt/oldrel .venv/bin/python tests/data/make_release_db.py \\
        tests/data/state-release-0.1.db

Commit 0513623 is the last commit of the flat `watcher/store.py`: schema
version 1 with every table and column added since without a bump (polls, rule
memory, held, mutes, decisions, discovered, sequences and `events.sequence`,
cards). The script uses only the store's public methods, so it runs on that
release and on this code alike; everything happens at fixed times (T0 below),
so the file's content is the same on every run.

What it holds (tests/store/test_migrations.py relies on it):
- target `hook` (a webhook): s1's two events pending and due at T0, one
  sessionless watcher event pending (lane ''), s2's row retrying (1 attempt,
  due again at T0 + 1 min), s3's row delivered, s4's row dead;
- target `team-slack`: s5's live card, its row delivered into the card;
- rule memory of s1 with a track, a settling event and an episode, a decision,
  a held notification for `hook` released at T0 + 8 h;
- a mute on s4, discovery (first run T0, s1 and s2 discovered), poll marks and
  the daemon's meta (heartbeat, API state, watched set), per-session sequences.

The database is created with 1 KiB pages, so the committed file stays small
(the page size changes nothing the store reads), and the WAL is checkpointed
into the main file, so the one file is the whole database.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from watcher.core.lifecycle import Track
from watcher.core.model import Event, EventType, SessionRef, Snapshot
from watcher.core.rules import Route
from watcher.core.rulestate import (
    Decision,
    Episode,
    Evaluation,
    Held,
    Mute,
    MuteKind,
    Outcome,
    RuleMemory,
    SessionMemory,
    Settling,
)
from watcher.store import Card, PollMark, SqliteStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def snapshot(session_id: str, status: str) -> Snapshot:
    """A session as the API showed it at T0."""
    return Snapshot(
        session_id=session_id,
        status=status,
        message_count=3,
        created_at=T0 - 10 * MINUTE,
        updated_at=T0,
        title=f"Task {session_id}",
    )


def event(session_id: str | None, kind: EventType, suffix: str, **data: object) -> Event:
    """An event about `session_id` (None: the watcher's own) at T0."""
    session = (
        None
        if session_id is None
        else SessionRef(id=session_id, title=f"Task {session_id}", status="idle", name=session_id)
    )
    name = session_id or "watcher"
    return Event(id=f"evt_{name}_{suffix}", type=kind, occurred_at=T0, session=session, data=data)


def record(store: SqliteStore, session_id: str, target: str, *events: Event) -> None:
    """Store a session's snapshot with `events`, each routed to `target`."""
    routes = [(e, Route("finished", target)) for e in events]
    store.record(session_id, snapshot(session_id, "idle"), list(events), routes, T0)


def outbox_id(store: SqliteStore, event_id: str) -> int:
    """The outbox row of `event_id`."""
    (row,) = [r for r in store.list_outbox() if r.event.id == event_id]
    return row.id


def fill(store: SqliteStore) -> None:
    """Everything the fixture holds (see the module docstring)."""
    changed = event("s1", EventType.STATUS_CHANGED, "idle", **{"from": "running", "to": "idle"})
    finished = event("s1", EventType.FINISHED, "finished", between_polls=False)
    record(store, "s1", "hook", changed, finished)
    recovered = event(None, EventType.API_RECOVERED, "recovered")
    store.record_events([recovered], [(recovered, Route("api", "hook"))], T0)
    for session_id in ("s2", "s3", "s4"):
        record(store, session_id, "hook", event(session_id, EventType.FINISHED, "finished"))
    store.mark_retry(outbox_id(store, "evt_s2_finished"), T0 + MINUTE, "HTTP 503")
    store.mark_delivered(outbox_id(store, "evt_s3_finished"), T0, None)
    store.mark_dead(outbox_id(store, "evt_s4_finished"), T0, "permanent failure: HTTP 410")

    record(store, "s5", "team-slack", event("s5", EventType.FINISHED, "finished"))
    store.intend_card(Card("team-slack", "s5", "C0123ABCD", None, "marker-s5"), T0)
    card_row = outbox_id(store, "evt_s5_finished")
    store.record_card("team-slack", "s5", "1764331200.000100", [card_row], T0)

    started = event("s1", EventType.STARTED, "started")
    memory = SessionMemory(
        Track("idle", T0, T0 - MINUTE, 2, T0),
        {
            "finished": RuleMemory(
                settling=(Settling(finished, 2, T0 + MINUTE),),
                episodes={"session.stuck": Episode(T0 - 20 * MINUTE, 1)},
                crossed=frozenset({"factory_credits>=100"}),
                last_sent=T0 - MINUTE,
            )
        },
    )
    release = T0 + timedelta(hours=8)
    evaluation = Evaluation(
        memory=memory,
        decisions=(Decision("begin", started, Outcome.HELD, "quiet hours", ("hook",), release),),
        held=(Held("hook", "night", release, started, "begin"),),
        wake_at=T0 + 5 * MINUTE,
    )
    store.record_evaluation("s1", evaluation, T0)
    store.add_mute(Mute(MuteKind.SESSION, "s4", None, "noisy"), T0)
    store.record_discovery(T0, T0, ["s1", "s2"], [])
    store.record_housekeeping(
        [PollMark(s, T0, "changed", T0 + 30 * timedelta(seconds=1)) for s in ("s1", "s2")],
        {
            "heartbeat_at": f"{T0.timestamp():.3f}",
            "api_state": "up",
            "api_since": "",
            "api_reason": "",
            "watched": json.dumps([{"id": s, "name": s} for s in ("s1", "s2", "s3", "s4", "s5")]),
        },
    )


def main(path: Path) -> None:
    """Write the fixture at `path` (which must not exist)."""
    if path.exists():
        raise SystemExit(f"{path} exists; remove it first")
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size=1024")
    db.execute("VACUUM")  # writes the header, so the page size holds
    db.close()
    store = SqliteStore(path)
    try:
        fill(store)
    finally:
        store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
