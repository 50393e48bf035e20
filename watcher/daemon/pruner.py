"""The pruner: retention, off the hot path, in small batches.

Every `period` (a minute) it tells the store the watch set, then runs each
retention rule of `state:` (`Settings.retention`) batch after batch: delivered
rows, dead letters, events nothing refers to, sessions no longer watched. Each
batch is one short store transaction through the database thread; between two
batches the pruner yields, so a poll waiting for the database goes first, and
a stop ends it between batches. Rows pruned and the database size go to
`/metrics`; the store keeps the running totals for `status`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import anyio.lowlevel

from watcher.core.outbox import OutboxStatus
from watcher.core.text import describe_error
from watcher.daemon.live import Part, Wiring
from watcher.poll.book import SessionBook
from watcher.store import Pruned

log = logging.getLogger("watcher.daemon")

PRUNE_PERIOD = 60.0  # seconds between two pruning turns
PRUNE_BATCH = 500  # rows per transaction: the write lock is held for milliseconds
MAX_BATCHES = 200  # per rule and turn: a turn always ends; what is left waits a minute


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What one pruning turn did: rows per table, and the database size after it."""

    rows: dict[str, int] = field(default_factory=dict)
    database_bytes: int | None = None
    batches: int = 0


class WatchedNow:
    """Whether a session is in the book's watch set at the moment the store asks.

    The store asks once per session it is about to forget, from the database
    thread: a session a reload or discovery added since the turn began is
    kept, not only those in the turn's snapshot.
    """

    __slots__ = ("_book",)

    def __init__(self, book: SessionBook) -> None:
        self._book = book

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._book.watched


class Pruner(Part):
    """Runs the retention rules every `period` seconds while the watcher runs."""

    def __init__(
        self,
        wiring: Wiring,
        *,
        period: float = PRUNE_PERIOD,
        batch: int = PRUNE_BATCH,
        max_batches: int = MAX_BATCHES,
    ) -> None:
        super().__init__(wiring)
        self.period = period
        self.batch = batch
        self.max_batches = max_batches

    async def run(self) -> None:
        """Prune every `period` seconds (the first turn one period after start) until stopped.

        The database size is measured at once, so `/metrics` has it from the start.
        """
        try:
            self.metrics.database_bytes.set(await self.db(self.store.database_bytes))
        except Exception as error:
            log.warning("cannot read the state database's size: %s", describe_error(error))
        await self.live.every(self.period, self.turn, what="pruning")

    async def turn(self) -> None:
        """One `prune`; a failure (a busy or broken database) is logged and waits a turn."""
        try:
            await self.prune()
        except Exception as error:
            log.warning(
                "pruning failed, trying again in %.0fs: %s", self.period, describe_error(error)
            )

    def _steps(self, now: datetime, watched: Container[str]) -> list[Callable[[], Pruned]]:
        """One call per retention rule, each deleting one batch."""
        retention = self.live.settings.retention
        store, batch = self.store, self.batch
        return [
            partial(
                store.prune_finished, OutboxStatus.DELIVERED, now - retention.keep_delivered, batch
            ),
            partial(store.prune_finished, OutboxStatus.DEAD, now - retention.keep_dead, batch),
            partial(store.prune_events, now - retention.keep_delivered, batch),
            partial(
                store.forget_sessions, now - retention.forget_sessions_after, watched, now, batch
            ),
        ]

    async def prune(self) -> PruneReport:
        """One turn: note the watch set, then each rule batch after batch; what it did."""
        now = self.clock()
        await self.db(self.store.note_watched, frozenset(self.book.watched), now)
        rows: dict[str, int] = {}
        batches = 0
        for step in self._steps(now, WatchedNow(self.book)):
            for _ in range(self.max_batches):
                if self.live.stopping:
                    return PruneReport(rows, None, batches)
                try:
                    pruned = await self.db(step)
                except Exception as error:  # one rule failing must not hold back the others
                    log.warning("pruning (%s) failed: %s", _name(step), describe_error(error))
                    break
                batches += 1
                for table, count in pruned.rows.items():
                    rows[table] = rows.get(table, 0) + count
                    self.metrics.rows_pruned.labels(table).inc(count)
                if not pruned.more:
                    break
                await anyio.lowlevel.checkpoint()  # what waits for the database goes first
        size = await self.db(self.store.database_bytes)
        self.metrics.database_bytes.set(size)
        if rows:
            log.info(
                "pruned %d row(s): %s",
                sum(rows.values()),
                ", ".join(f"{table} {n}" for table, n in sorted(rows.items())),
            )
        return PruneReport(rows, size, batches)


def _name(step: Callable[[], Pruned]) -> str:
    """The store call a retention step makes, for a log line."""
    func = step.func if isinstance(step, partial) else step
    return getattr(func, "__name__", "a retention step")
