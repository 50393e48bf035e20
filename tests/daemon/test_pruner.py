"""The pruner, driven with an injected clock against a real SQLite store.

The daemon-level story (a session ages out of discovery, is forgotten, comes
back as a new baseline with its sequence still increasing) is in
tests/daemon/test_retention_daemon.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.daemon.parts import Clock
from tests.daemon.parts import wiring as part_wiring
from watcher.core.rules import Route
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, Retention, Settings, WatchedSession
from watcher.daemon.live import Wiring
from watcher.daemon.pruner import Pruner
from watcher.ops.metrics import Metrics
from watcher.poll.backoff import Backoff
from watcher.poll.book import SessionBook
from watcher.store import OutboxStatus, Pruned, SqliteStore

D = timedelta(days=1)
pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A SQLite store in a file."""
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


def wiring(store: SqliteStore, clock: Clock, *watched: str, retention: Retention) -> Wiring:
    """What a watcher hands the pruner: settings with `retention`, a book watching `watched`."""
    settings = Settings(
        factory=FactorySettings(api_key=Secret("k")),
        state_path=Path(store.location),
        sessions=tuple(WatchedSession(id=sid) for sid in watched),
        retention=retention,
    )
    book = SessionBook({}, backoff=Backoff(random.Random(1).random))
    book.watch(settings)
    return part_wiring(settings, store, clock, book=book)


def delivered(store: SqliteStore, count: int, at: datetime) -> None:
    """`count` notifications of s1, delivered at `at`."""
    for n in range(count):
        e = event(id=f"e{n}")
        store.record_events([e], [(e, Route("r", "hook"))], at)
    for row in store.list_outbox(OutboxStatus.PENDING, limit=count):
        store.mark_delivered(row.id, at, None)


def pruned_metric(metrics: Metrics, table: str) -> float | None:
    """`factory_watcher_rows_pruned_total{table=...}` as scraped."""
    return metrics.registry.get_sample_value("factory_watcher_rows_pruned_total", {"table": table})


async def test_a_turn_prunes_batch_after_batch_and_shows_it(store: SqliteStore) -> None:
    """1,200 old rows go in three batches of 500; metrics and totals say so."""
    clock = Clock(T0)
    delivered(store, 1200, T0)
    wired = wiring(store, clock, retention=Retention(keep_delivered=D))
    pruner = Pruner(wired)
    assert (await pruner.prune()).rows == {}  # nothing is old enough yet
    clock.now = T0 + 2 * D
    report = await pruner.prune()
    assert report.rows == {"outbox": 1200, "events": 1200}
    assert report.batches == 3 + 3  # three full batches, then one empty call per other rule
    assert pruned_metric(wired.metrics, "outbox") == 1200
    assert wired.metrics.registry.get_sample_value("factory_watcher_database_bytes") == (
        store.database_bytes()
    )
    assert store.pruned_totals() == {"outbox": 1200, "events": 1200}
    assert store.counts()[OutboxStatus.DELIVERED] == 0


async def test_a_turn_ends_after_its_batches_and_the_rest_waits(store: SqliteStore) -> None:
    """A turn runs at most `max_batches` per rule; the next turn goes on."""
    clock = Clock(T0 + 2 * D)
    delivered(store, 10, T0)
    pruner = Pruner(
        wiring(store, clock, retention=Retention(keep_delivered=D)), batch=2, max_batches=2
    )
    assert (await pruner.prune()).rows["outbox"] == 4
    assert (await pruner.prune()).rows["outbox"] == 4
    assert (await pruner.prune()).rows["outbox"] == 2


async def test_a_stopping_watcher_prunes_nothing_more(store: SqliteStore) -> None:
    """Once the run stops, the turn ends before its next batch."""
    delivered(store, 3, T0)
    wired = wiring(store, Clock(T0 + 2 * D), retention=Retention(keep_delivered=D))
    wired.live.stop()
    report = await Pruner(wired).prune()
    assert (report.rows, report.batches) == ({}, 0)
    assert store.counts()[OutboxStatus.DELIVERED] == 3


async def test_sessions_are_forgotten_only_once_unwatched_for_the_retention(
    store: SqliteStore,
) -> None:
    """The watch set is noted each turn: a watched session (never polled or not) stays."""
    clock = Clock(T0)
    for sid in ("kept", "left"):
        store.record(sid, snap(session_id=sid), [event(id=f"{sid}-e", session=ref(id=sid))], [], T0)
    wired = wiring(
        store, clock, "kept", "never-polled", retention=Retention(forget_sessions_after=D)
    )
    pruner = Pruner(wired)
    await pruner.prune()
    assert store.unwatched_since("left") == T0
    clock.now = T0 + D - timedelta(seconds=1)
    assert "sessions" not in (await pruner.prune()).rows
    clock.now = T0 + D
    assert (await pruner.prune()).rows == {"events": 1, "sessions": 1}
    assert store.load_state("left") is None
    assert store.load_state("kept") is not None
    assert pruned_metric(wired.metrics, "sessions") == 1


async def test_a_failing_turn_is_logged_and_the_pruner_goes_on(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error costs a warning, not the run."""
    wired = wiring(store, Clock(T0), retention=Retention())
    store.close()
    await Pruner(wired).turn()
    assert "pruning failed, trying again in 60s" in caplog.text


async def test_a_reloaded_retention_applies_at_the_next_turn(store: SqliteStore) -> None:
    """The pruner reads the settings in force at each turn: a reload shortens retention."""
    delivered(store, 2, T0)
    wired = wiring(store, Clock(T0 + 2 * D), retention=Retention())
    pruner = Pruner(wired)
    assert (await pruner.prune()).rows == {}
    wired.live.settings = replace(wired.live.settings, retention=Retention(keep_delivered=D))
    assert (await pruner.prune()).rows == {"outbox": 2, "events": 2}


async def test_a_session_watched_again_during_the_turn_is_not_forgotten(
    store: SqliteStore,
) -> None:
    """Discovery may add a session between the turn's start and its forgetting: it stays."""
    store.record("back", snap(session_id="back"), [], [], T0)
    store.note_watched(set(), T0)
    wired = wiring(store, Clock(T0 + 2 * D), retention=Retention(forget_sessions_after=D))

    async def meanwhile(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "func", None) == store.forget_sessions:
            wired.book.add(WatchedSession(id="back"))  # found again by discovery meanwhile
        return fn(*args, **kwargs)

    report = await Pruner(replace(wired, db=meanwhile)).prune()
    assert "sessions" not in report.rows
    assert store.load_state("back") is not None


async def test_the_database_size_is_shown_from_the_start(store: SqliteStore) -> None:
    """`run` measures the size before its first turn (which comes a minute later)."""
    wired = wiring(store, Clock(T0), retention=Retention())
    wired.live.stop()  # the run ends at once, after the first measure
    await Pruner(wired).run()
    size = wired.metrics.registry.get_sample_value("factory_watcher_database_bytes")
    assert size == store.database_bytes() > 0


class DeadLettersBroken(SqliteStore):
    """A store whose dead-letter pruning fails every time (a bug or a broken index)."""

    def prune_finished(self, status: OutboxStatus, before: datetime, limit: int) -> Pruned:
        """Fails for dead letters; delivered rows prune as usual."""
        if status is OutboxStatus.DEAD:
            raise RuntimeError("dead letters cannot be read")
        return super().prune_finished(status, before, limit)


async def test_one_rule_failing_does_not_hold_back_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Dead-letter pruning fails: it is logged, and delivered rows and events still go."""
    broken = DeadLettersBroken(tmp_path / "state.db")
    try:
        clock = Clock(T0)
        delivered(broken, 10, T0)
        pruner = Pruner(wiring(broken, clock, retention=Retention(keep_delivered=D)))
        clock.now = T0 + 2 * D
        report = await pruner.prune()
        assert report.rows == {"outbox": 10, "events": 10}
        assert "pruning (prune_finished) failed: RuntimeError: dead letters cannot be read" in (
            caplog.text
        )
    finally:
        broken.close()
