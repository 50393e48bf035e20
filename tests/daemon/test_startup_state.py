"""Start-up reads the stored states of the watched sessions only, and survives a damaged one."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from tests.core.factories import snap
from tests.daemon.offline import T0, IdleSource, offline_settings, offline_watcher
from watcher.core.model import EventType
from watcher.core.poll import Answer, Fetched
from watcher.store import SqliteStore


class SnapshotSource(IdleSource):
    """Every session answers the same snapshot it was stored with (nothing changed)."""

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """A running session, as `snap` makes it."""
        return Fetched(snap(session_id=session_id))


def damage(path: Path, session_id: str, text: str) -> None:
    """Overwrite a session's stored state behind the store's back (a bad sector, an old bug)."""
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE sessions SET state=? WHERE session_id=?", (text, session_id))
    db.close()


@pytest.mark.anyio
async def test_an_unreadable_session_row_is_set_aside_and_the_daemon_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One damaged row: the daemon starts, says which session and why, and re-baselines it."""
    settings = offline_settings(tmp_path, "s1", "s2")
    store = SqliteStore(settings.state_path)
    store.record("s1", snap(session_id="s1"), [], [], T0)
    store.record("s2", snap(session_id="s2"), [], [], T0)
    store.close()
    damage(settings.state_path, "s1", '{"gone": false, "snapshot": {"status": ')
    now = [T0]
    with caplog.at_level(logging.WARNING, logger="watcher"):
        watcher = offline_watcher(settings, now, source=SnapshotSource())
    try:
        [line] = [r.getMessage() for r in caplog.records]
        assert line.startswith("session s1: stored state set aside (stored state cannot be read:")
        assert "JSONDecodeError" in line
        assert line.endswith("its next poll is a new baseline")
        assert watcher.book.state("s1") is None
        assert watcher.book.state("s2") == snap(session_id="s2")
        baseline = await watcher.poll("s1")
        assert [e.type for e in baseline.events] == [EventType.DISCOVERED]
        assert (await watcher.poll("s2")).events == ()  # the readable one diffs as before
        assert watcher.store.load_state("s1") == snap(session_id="s1")
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_start_up_loads_the_watched_sessions_only(tmp_path: Path) -> None:
    """Sessions stored but no longer watched stay in the store and out of memory."""
    settings = offline_settings(tmp_path, "s1")
    store = SqliteStore(settings.state_path)
    for sid in ("s1", "old1", "old2"):
        store.record(sid, replace(snap(), session_id=sid), [], [], T0)
    store.close()
    watcher = offline_watcher(settings, [T0])
    try:
        assert watcher.book.state("s1") == snap()
        assert watcher.book.state("old1") is None
        assert set(watcher.book.entries) == {"s1"}
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_an_unreadable_row_of_a_session_added_later_is_a_new_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session a reload adds, with a damaged row: its poll logs why and starts it afresh."""
    settings = offline_settings(tmp_path, "s1")
    store = SqliteStore(settings.state_path)
    store.record("s2", snap(session_id="s2"), [], [], T0)
    store.close()
    damage(settings.state_path, "s2", "[]")
    watcher = offline_watcher(settings, [T0], source=SnapshotSource())
    try:
        watcher.book.watch(offline_settings(tmp_path, "s1", "s2"))  # as a reload does
        with caplog.at_level(logging.WARNING, logger="watcher"):
            report = await watcher.poll("s2")
        assert [e.type for e in report.events] == [EventType.DISCOVERED]
        [line] = [r.getMessage() for r in caplog.records]
        assert line.startswith("stored state of session s2 cannot be read (TypeError")
        assert watcher.store.load_state("s2") == snap(session_id="s2")
    finally:
        await watcher.aclose()
        watcher.store.close()
