"""Backoff: how long a failed poll (or discovery pass) holds its key back, and the
API-wide pause a 429 with Retry-After asks for.

It owns each key's failure streak and pause, keyed by session id (or `DISCOVERY`
for the list), and the one pause that holds back every request. Memory only,
no I/O: callers pass `now`, and the jitter is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from watcher.core.poll import FetchFailed
from watcher.core.retry import poll_backoff

DISCOVERY = "__discovery__"  # the key of the discovery pass in backoff bookkeeping


class Backoff:
    """Failure streaks and pauses per key, and the API-wide Retry-After pause."""

    __slots__ = ("_jitter", "api_paused_until", "failures", "paused_until")

    def __init__(self, jitter: Callable[[], float]) -> None:
        self._jitter = jitter
        self.failures: dict[str, int] = {}
        self.paused_until: dict[str, datetime] = {}
        self.api_paused_until: datetime | None = None

    def failed(self, key: str, interval: timedelta, failure: FetchFailed, now: datetime) -> None:
        """Hold `key` back after `failure`; `interval` is its usual poll interval."""
        if failure.status == 429:
            # The API's rate, not this session, is the trouble: the shared budget
            # has slowed down; the session itself waits only for a Retry-After.
            wait = failure.retry_after or timedelta(0)
            self.paused_until[key] = now + wait
            if failure.retry_after is not None and (
                self.api_paused_until is None or now + wait > self.api_paused_until
            ):
                self.api_paused_until = now + wait
            return
        failures = self.failures.get(key, 0) + 1
        self.failures[key] = failures
        delay = poll_backoff(failures, interval, self._jitter())
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        self.paused_until[key] = now + delay

    def succeeded(self, key: str) -> None:
        """`key` answered: its failure streak ends, and with it the pause it caused."""
        if self.failures.pop(key, None) is not None:
            self.paused_until.pop(key, None)

    def forget(self, key: str) -> None:
        """Drop whatever is kept for `key`: streak and pause (a Retry-After's too)."""
        self.failures.pop(key, None)
        self.paused_until.pop(key, None)

    def reset(self) -> None:
        """After a declared outage: every key returns to its normal rhythm now."""
        self.failures.clear()
        self.paused_until.clear()
        self.api_paused_until = None

    def allowed(self, key: str, now: datetime) -> bool:
        """Whether backoff or a Retry-After currently holds back `key`."""
        if self.api_paused_until is not None and now < self.api_paused_until:
            return False
        until = self.paused_until.get(key)
        return until is None or now >= until

    def resume_at(self, key: str, due: datetime | None) -> datetime | None:
        """When `key`, due at `due` (None: not scheduled), is polled at the earliest."""
        at = due
        for paused in (self.paused_until.get(key), self.api_paused_until):
            if paused is not None and (at is None or paused > at):
                at = paused
        return at
