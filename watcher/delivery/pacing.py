"""Pacing: how far apart sends to one destination go, and which targets may take
rows of different sessions at the same time.

Owns `Pacer` (per-key turns on a monotonic clock), `pacing_key` (targets that
share a rate limit share a key) and `sends_together` (only an unpaced webhook
takes a batch at once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

import anyio

from watcher.core.settings import SlackTarget, Target, TargetKind


def sends_together(target: Target) -> bool:
    """Whether rows of different sessions may go to `target` at the same time: only
    to a webhook without pacing. Slack channels get one message at a time, in order,
    paced or not.
    """
    return target.kind is TargetKind.WEBHOOK and target.min_interval <= timedelta(0)


def pacing_key(target: Target) -> str:
    """Targets that share a rate limit share a key: Slack limits posts per channel."""
    if isinstance(target, SlackTarget):
        return f"slack:{target.api_url or ''}:{target.channel}"
    return f"{target.kind}:{target.name}"


class Pacer:
    """Spaces sends per key (monotonic time): a send starts `gap` seconds after the
    previous one with the same key ended, so the destination sees the gap too,
    however long the previous request took to arrive.
    """

    def __init__(
        self,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    @asynccontextmanager
    async def turn(self, key: str, gap: float) -> AsyncIterator[None]:
        """Wait for `key`'s next slot, hold it for the send, and space the next one."""
        if gap <= 0:
            yield
            return
        now = self._clock()
        # A fresh process cannot know when the previous one last sent (a restart
        # takes well under a second), so its first send waits one gap too.
        slot = max(now, self._next.get(key, now + gap))
        self._next[key] = slot + gap  # concurrent senders queue behind this slot
        if slot > now:
            await self._sleep(slot - now)
        try:
            yield
        finally:
            self._next[key] = max(self._next[key], self._clock() + gap)

    def pace(self, target: Target) -> AbstractAsyncContextManager[None]:
        """`target`'s turn: its pacing key, spaced by its `min_interval`."""
        return self.turn(pacing_key(target), target.min_interval.total_seconds())
