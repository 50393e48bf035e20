"""What the parts of a watcher share while it lives: the settings and API client in
force (a reload swaps them), the calls in flight on each client (a replaced one is
closed once it has none), the secrets to mask, whether the run is stopping, the
waits a stop cuts short, the fixed ticks of the run, the database hand-off, the
figures the status line shows, and the wiring that hands all of it to each part.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio

from watcher.core.secret import redact
from watcher.core.settings import Settings
from watcher.ops.metrics import Metrics
from watcher.poll.api import RequestBudget, SessionSource
from watcher.poll.book import SessionBook
from watcher.store import Store

log = logging.getLogger("watcher.daemon")
P = ParamSpec("P")
R = TypeVar("R")


class Db(Protocol):
    """The hand-off of store calls to the database thread: `await db(fn, *args)`."""

    async def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run `fn(*args, **kwargs)` in the database thread, off the event loop."""
        ...


@dataclass
class WatcherStats:
    """Figures for the status line, the logs and `/readyz`; the poll bookkeeping that
    housekeeping writes in one batch (memory only on the hot path).
    """

    polls: int = 0
    failed_polls: int = 0
    last_poll_at: datetime | None = None
    list_skips: int = 0  # due polls the session list stood in for
    lists: int = 0  # complete discovery passes
    failed_lists: int = 0
    reschedules: int = 0
    last_success: datetime | None = None
    last_failure: str | None = None
    polled: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # when, outcome


class Live:
    """The settings and API client in force now, and whether the run is stopping."""

    __slots__ = ("_idle", "_out", "_waiting", "retired_secrets", "settings", "source", "stopping")

    def __init__(self, settings: Settings, source: SessionSource) -> None:
        self.settings = settings
        self.source = source
        # Calls in flight on each client, by id(): one a reload replaced is closed once
        # its last call has returned, never under one.
        self._out: dict[int, int] = {}
        self._idle: dict[int, anyio.Event] = {}  # set when that client's last call returns
        # Secrets of a replaced config, while a client or notifier built from it is open.
        self.retired_secrets: tuple[str, ...] = ()
        self.stopping = False
        self._waiting: set[anyio.CancelScope] = set()  # waits that a stop cuts short

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value to mask now: the config's secrets, and those of a replaced config
        while a client or notifier built from it is open (its errors may quote them)."""
        current = self.settings.secret_values()
        return current + tuple(s for s in self.retired_secrets if s not in current)

    def redact(self, text: str) -> str:
        """`text` with every secret in force masked (for anything logged or stored)."""
        return redact(text, self.secrets)

    def borrow(self) -> SessionSource:
        """The client in force, counted as in use until `give_back` (its calls are not
        cut short when a reload replaces it)."""
        source = self.source
        key = id(source)
        self._out[key] = self._out.get(key, 0) + 1
        return source

    def give_back(self, source: SessionSource) -> None:
        """A call on `source`, borrowed with `borrow`, returned."""
        key = id(source)
        left = self._out[key] - 1
        if left:
            self._out[key] = left
            return
        del self._out[key]
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.set()

    def in_flight(self, source: SessionSource) -> int:
        """How many calls borrowed on `source` have not returned yet."""
        return self._out.get(id(source), 0)

    async def idle(self, source: SessionSource) -> None:
        """Return once no call borrowed on `source` is in flight."""
        key = id(source)
        if key in self._out:
            await self._idle.setdefault(key, anyio.Event()).wait()

    def stop(self) -> None:
        """The run is stopping: parts stop starting work, and every wait is cut short."""
        self.stopping = True
        for scope in list(self._waiting):
            scope.cancel()

    async def unless_stopping(self, wait: Callable[[], Awaitable[Any]]) -> bool:
        """Await `wait()`; False when a stop cut it short."""
        with anyio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                await wait()
            finally:
                self._waiting.discard(scope)
        return not scope.cancelled_caught

    async def every(
        self, period: float, job: Callable[[], Awaitable[object]], *, what: str
    ) -> None:
        """Run `job` every `period` seconds, the first one period from now, until the run
        stops. Turns stay on their grid; a run that outlasts its period skips the turns
        it overlapped (never two at once, nothing caught up later). A turn that raises
        is logged as `what` failing, and the next turn comes all the same.
        """
        due = anyio.current_time() + period
        while not self.stopping:
            delay = max(due - anyio.current_time(), 0.0)
            if not await self.unless_stopping(partial(anyio.sleep, delay)):
                return
            try:
                await job()
            except Exception:  # one failed turn must not end the loop
                log.exception("%s failed; trying again in %gs", what, period)
            due += period
            now = anyio.current_time()
            if due <= now:
                due += math.ceil((now - due) / period) * period


@dataclass(frozen=True, slots=True)
class Wiring:
    """What every part of one watcher is wired to (the composition root makes one)."""

    live: Live
    book: SessionBook
    store: Store
    db: Db  # store calls go through it, to the one database thread
    budget: RequestBudget  # one token per API request, shared by every part
    stats: WatcherStats
    metrics: Metrics
    clock: Callable[[], datetime]
    wake: Callable[[Collection[str]], None]  # delivery: new rows for these targets


class Part:
    """A part of one watcher: the wiring's fields (and the book's backoff) as its own."""

    def __init__(self, wiring: Wiring) -> None:
        self.live = wiring.live
        self.book = wiring.book
        self.backoff = wiring.book.backoff
        self.store = wiring.store
        self.db = wiring.db
        self.budget = wiring.budget
        self.stats = wiring.stats
        self.metrics = wiring.metrics
        self.clock = wiring.clock
        self.wake = wiring.wake
