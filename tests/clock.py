"""A clock that tests move by hand."""

from __future__ import annotations


class ManualClock:
    """Stands in for `time.time` or `time.monotonic`; `now` only changes when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
