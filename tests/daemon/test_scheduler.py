"""The poll scheduler: due sessions are queued once, held back by backoff, earliest first."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.daemon.offline import T0, offline_settings, offline_watcher
from watcher.core.poll import FetchFailed, FetchFailureKind
from watcher.core.settings import WatchedSession


@pytest.mark.anyio
async def test_a_due_session_is_queued_once_while_its_poll_is_pending(tmp_path: Path) -> None:
    """Ticks of a session already queued (or being polled) queue nothing more."""
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), [T0])
    scheduler = watcher.scheduler
    try:
        queue = scheduler.open()
        scheduler.tick("s1")
        scheduler.tick("s1")
        assert len(queue) == 1
        assert scheduler.in_flight == {"s1"}
        assert queue.pop() == "s1"
        scheduler.tick("s1")
        assert len(queue) == 0  # popped, but its poll has not finished
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_backoff_holds_a_due_session_back_until_its_pause_ends(tmp_path: Path) -> None:
    """A failed session's ticks queue nothing until the backoff lets it go."""
    now = [T0]
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), now)
    scheduler = watcher.scheduler
    try:
        queue = scheduler.open()
        failed = FetchFailed(FetchFailureKind.RETRYABLE, "boom")
        watcher.book.backoff.failed("s1", timedelta(seconds=30), failed, T0)
        scheduler.tick("s1")
        assert len(queue) == 0
        now[0] = T0 + timedelta(hours=1)
        scheduler.tick("s1")
        assert len(queue) == 1
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_the_shortest_interval_is_served_first(tmp_path: Path) -> None:
    """Queued together, the session polled every 5 s goes before the one every 10 min."""
    settings = replace(
        offline_settings(tmp_path),
        sessions=(
            WatchedSession(id="slow", interval=timedelta(minutes=10)),
            WatchedSession(id="fast", interval=timedelta(seconds=5)),
        ),
    )
    watcher = offline_watcher(settings, [T0])
    scheduler = watcher.scheduler
    try:
        queue = scheduler.open()
        scheduler.schedule_all()
        assert watcher.book.interval("fast") == timedelta(seconds=5)
        assert watcher.book.interval("slow") == timedelta(minutes=10)
        assert scheduler.enqueue("slow")
        assert scheduler.enqueue("fast")
        assert not scheduler.enqueue("fast")  # queued already
        assert [queue.pop(), queue.pop()] == ["fast", "slow"]
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_nothing_is_queued_or_rescheduled_outside_a_run(tmp_path: Path) -> None:
    """Before a run (one-shot use) and once it stops, ticks and reschedules do nothing."""
    watcher = offline_watcher(offline_settings(tmp_path, "s1"), [T0])
    scheduler = watcher.scheduler
    try:
        scheduler.tick("s1")
        scheduler.reschedule("s1")
        assert watcher.book.interval("s1") is None
        assert "s1" not in scheduler.timetable
        queue = scheduler.open()
        scheduler.reschedule("s1")
        assert watcher.book.interval("s1") == timedelta(seconds=30)
        scheduler.tick("s1")
        scheduler.stop()
        assert scheduler.in_flight == set()  # queued polls are let go
        assert len(queue) == 0
        watcher.live.stop()
        scheduler.tick("s1")
        assert not scheduler.enqueue("s1")
    finally:
        await watcher.aclose()
        watcher.store.close()
