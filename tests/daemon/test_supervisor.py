"""The supervisor: readiness, housekeeping, the status line and the heartbeat."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.core.factories import snap
from tests.daemon.offline import T0, offline_settings, offline_watcher
from watcher.core.model import Gone, SessionState
from watcher.core.settings import WatchedSession
from watcher.daemon.supervisor import STALL_AFTER, state_bucket
from watcher.ops.systemd import ProgressWatchdog
from watcher.store import OutboxFigures, PollMark, SqliteStore


class RecordingStore(SqliteStore):
    """The real store, keeping what housekeeping wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.written: list[tuple[list[PollMark], dict[str, str]]] = []
        self.watched: list[list[str] | None] = []

    def record_housekeeping(
        self,
        polls: Sequence[PollMark],
        meta: Mapping[str, str],
        watched: Collection[str] | None = None,
    ) -> None:
        """Keep a copy, then write."""
        self.written.append((list(polls), dict(meta)))
        self.watched.append(None if watched is None else sorted(watched))
        super().record_housekeeping(polls, meta, watched)


class UnreadableStore(SqliteStore):
    """The real store, but its outbox figures cannot be read (an I/O error)."""

    def outbox_figures(self, targets: Sequence[str]) -> OutboxFigures:
        """Fail the way SQLite does when the disk fails."""
        raise sqlite3.OperationalError("disk I/O error")


@pytest.mark.anyio
async def test_readiness_follows_start_store_and_polls(tmp_path: Path) -> None:
    """Not started, then store unchecked, then no poll yet, then ready, then API down."""
    now = [T0]
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), now)
    supervisor = watcher.supervisor
    try:
        assert supervisor.readiness().reason == "not started"
        supervisor.mark_started()
        assert supervisor.readiness().reason == "store not checked yet"
        await supervisor.housekeeping()
        assert supervisor.readiness().reason == "no successful poll yet"
        watcher.stats.last_success = T0
        assert supervisor.readiness().ready
        now[0] = T0 + timedelta(minutes=2)  # twice the 30 s interval, and more
        await supervisor.housekeeping()
        assert supervisor.readiness().reason.startswith("API down: no successful poll for 120s")
        watcher.live.stop()
        assert supervisor.readiness().reason == "stopping"
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_housekeeping_writes_polls_once_and_the_watch_list_when_it_changed(
    tmp_path: Path,
) -> None:
    """Poll marks are written once each; the watch list only when it changed since."""
    settings = offline_settings(tmp_path, "s1")
    store = RecordingStore(settings.state_path)
    watcher = offline_watcher(settings, [T0], store=store)
    try:
        watcher.stats.polled["s1"] = (T0, "ok")
        await watcher.supervisor.housekeeping()
        await watcher.supervisor.housekeeping()
        watcher.book.watch(replace(settings, sessions=(WatchedSession(id="s2", name="two"),)))
        await watcher.supervisor.housekeeping()
        [(marks, meta), (again, meta_again), (_, meta_changed)] = store.written
        assert [(m.session_id, m.outcome) for m in marks] == [("s1", "ok")]
        assert again == []
        assert meta["watched"] == '[{"id": "s1", "name": null}]'
        assert "watched" not in meta_again
        assert meta_changed["watched"] == '[{"id": "s2", "name": "two"}]'
        assert store.watched == [["s1"], None, ["s2"]]  # the store drops other sessions' marks
        assert meta["api_state"] == "up"
    finally:
        await watcher.aclose()
        store.close()


@pytest.mark.anyio
async def test_each_housekeeping_round_is_timed_in_the_metrics(tmp_path: Path) -> None:
    """Every round adds one observation to factory_watcher_housekeeping_seconds."""
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), [T0])
    try:
        for _ in range(3):
            await watcher.supervisor.housekeeping()
        body, _ = watcher.metrics.exposition(None)
        found = {
            sample.name: sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if not sample.labels
        }
        assert found["factory_watcher_housekeeping_seconds_count"] == 3
        assert found["factory_watcher_housekeeping_seconds_sum"] > 0
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_the_status_line_says_what_is_watched_and_notes_a_failed_reload(
    tmp_path: Path,
) -> None:
    """Sessions, last poll, outbox and API state; a note is appended while it stands."""
    now = [T0]
    watcher = offline_watcher(offline_settings(tmp_path, "s1", "s2"), now)
    try:
        line = await watcher.supervisor.status_line()
        assert line.startswith("watching 2 session(s); last poll never; budget 1e+03/s;")
        assert line.endswith("outbox 0 pending, 0 dead; API up")
        watcher.stats.last_poll_at = T0
        now[0] = T0 + timedelta(seconds=7)
        watcher.supervisor.note = "reload failed: bad"
        line = await watcher.supervisor.status_line()
        assert "last poll 7s ago" in line
        assert line.endswith("; reload failed: bad")
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_the_status_line_says_the_outbox_is_unknown_when_the_store_cannot_read_it(
    tmp_path: Path,
) -> None:
    """The line is still written (a reload's failure path and supervision use it)."""
    settings = offline_settings(tmp_path, "s1")
    store = UnreadableStore(settings.state_path)
    watcher = offline_watcher(settings, [T0], store=store)
    try:
        line = await watcher.supervisor.status_line()
        assert (
            line == "watching 1 session(s); last poll never; budget 1e+03/s; outbox unknown; API up"
        )
    finally:
        await watcher.aclose()
        store.close()


@pytest.mark.anyio
async def test_the_heartbeat_vouches_for_the_scheduler_only_while_the_timetable_turns(
    tmp_path: Path,
) -> None:
    """A timetable silent for `STALL_AFTER` stops the scheduler's beats (the ping is withheld)."""
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), [T0])
    supervisor = watcher.supervisor
    try:
        turned = watcher.scheduler.last_cycle
        supervisor.progress = ProgressWatchdog(STALL_AFTER)
        supervisor.progress.register("scheduler", turned)
        supervisor.heartbeat(turned + 1)
        stalled = turned + STALL_AFTER + 1
        supervisor.heartbeat(stalled)  # the timetable has not turned since: no beat
        assert supervisor.progress.healthy(turned + STALL_AFTER)[0]
        healthy, reason = supervisor.progress.healthy(stalled + 1)
        assert not healthy
        assert reason.startswith("scheduler made no progress")
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.parametrize(
    ("state", "bucket"),
    [
        (None, "unknown"),
        (snap(status="running"), "running"),
        (snap(status="idle"), "idle"),
        (snap(status="warping"), "other"),
        (Gone("s1", snap(status="idle")), "gone"),
        (Gone("s1", None), "gone"),
    ],
    ids=["never-read", "running", "idle", "new-status", "gone", "gone-unseen"],
)
def test_a_sessions_bucket_comes_from_its_state_in_the_book(
    state: SessionState | None, bucket: str
) -> None:
    """Housekeeping counts sessions by the state in memory, without reading the store."""
    assert state_bucket(state) == bucket
