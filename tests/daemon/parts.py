"""Helpers for daemon tests: clocks the test moves, and one part wired to a real store.

`Clock` and `wiring` serve tests that drive one part (pruner, health watch,
report part) against a real store with the database hand-off run on the spot;
`StepClock`, `clocked_rig` and `cycle` serve tests that run a whole watcher
against the loopback rig, the simulator reading the same clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.daemon.offline import IdleSource
from tests.rig import Rig, running_rig
from watcher.core.settings import Settings
from watcher.daemon import Watcher
from watcher.daemon.live import Live, WatcherStats, Wiring
from watcher.ops.metrics import Metrics
from watcher.poll.api import RequestBudget
from watcher.poll.backoff import Backoff
from watcher.poll.book import SessionBook
from watcher.store import Store


class Clock:
    """A part's `now`, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The database hand-off, run on the spot (the store is real; only the thread is not)."""
    return fn(*args, **kwargs)


def wiring(
    settings: Settings,
    store: Store,
    clock: Callable[[], datetime],
    *,
    wake: Callable[[Collection[str]], None] = lambda _targets: None,
    metrics: Metrics | None = None,
    book: SessionBook | None = None,
) -> Wiring:
    """What a watcher hands one part: `settings` over a source never asked, `store` inline."""
    if book is None:
        book = SessionBook({}, backoff=Backoff(random.Random(1).random))
    return Wiring(
        live=Live(settings, IdleSource()),
        book=book,
        store=store,
        db=inline,
        budget=RequestBudget(10.0),
        stats=WatcherStats(),
        metrics=metrics if metrics is not None else Metrics(),
        clock=clock,
        wake=wake,
    )


class StepClock:
    """Wall-clock seconds shared by the simulator and the watcher; moves only when told."""

    def __init__(self, start: float) -> None:
        self.now = start

    def seconds(self) -> float:
        """For the simulator's timestamps."""
        return self.now

    def utc(self) -> datetime:
        """For the watcher."""
        return datetime.fromtimestamp(self.now, tz=UTC)

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@contextmanager
def clocked_rig(tmp_path: Path, clock: StepClock) -> Iterator[Rig]:
    """The loopback rig whose simulator reads `clock`."""
    with running_rig(tmp_path, clock=clock.seconds) as running:
        yield running


async def cycle(watcher: Watcher) -> None:
    """One poll of every session and one delivery pass."""
    await watcher.poll_all()
    await watcher.deliver_due()
