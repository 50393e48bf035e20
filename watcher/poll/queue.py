"""The poll queue: sessions due for a poll, earliest deadline first.

Workers take from it once they hold a token of the request budget, so when
the budget is short, running sessions (short intervals, near deadlines) go
first while a slowly polled one is never starved.
"""

from __future__ import annotations

import heapq

import anyio


class PollQueue:
    """Sessions due for a poll, earliest deadline first; each id is queued at most once."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, str]] = []
        self._count = 0
        self._closed = False
        self._changed = anyio.Event()
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, session_id: str, deadline: float, priority: int) -> None:
        """Queue a poll due by `deadline` (ties: lower `priority` first); ids kept unique."""
        if self._closed:
            return
        self._count += 1
        heapq.heappush(self._heap, (deadline, priority, self._count, session_id))
        self._wake()

    def pop(self) -> str | None:
        """The most urgent queued id, or None when empty."""
        return heapq.heappop(self._heap)[3] if self._heap else None

    async def wait(self) -> bool:
        """Wait until something is queued; False once closed."""
        while not self._heap and not self._closed:
            self._waiters += 1
            try:
                await self._changed.wait()
            finally:
                self._waiters -= 1
        return not self._closed

    def close(self) -> list[str]:
        """Stop; returns the ids that were still queued."""
        self._closed = True
        left = [item[3] for item in self._heap]
        self._heap.clear()
        self._wake()
        return left

    def _wake(self) -> None:
        if self._waiters:  # a new event per put would cost more than the put itself
            changed, self._changed = self._changed, anyio.Event()
            changed.set()
