"""The poll queue: earliest deadline first, ties by priority, each close returns what was left."""

from __future__ import annotations

import pytest

from watcher.poll.queue import PollQueue


@pytest.mark.anyio
async def test_the_poll_queue_serves_the_earliest_deadline_first() -> None:
    """Short intervals (running sessions) go first; a slow session's deadline still comes."""
    queue = PollQueue()
    for session_id, deadline, priority in [
        ("idle-old", 3.0, 2),  # queued long ago: its deadline is near
        ("idle-new", 600.0, 2),
        ("run-1", 5.0, 0),
        ("pend", 10.0, 1),
        ("run-2", 5.0, 0),
        ("unknown", 5.0, 2),
    ]:
        queue.put(session_id, deadline, priority)
    assert await queue.wait()
    order = [queue.pop() for _ in range(6)]
    assert order == ["idle-old", "run-1", "run-2", "unknown", "pend", "idle-new"]
    assert queue.pop() is None
    queue.put("x", 1.0, 2)
    assert queue.close() == ["x"]
    assert not await queue.wait()
