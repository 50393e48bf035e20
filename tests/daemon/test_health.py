"""API health events: a declared outage or recovery is stored once, even if the store fails."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.core.factories import T0
from tests.daemon.parts import wiring
from watcher.core.model import Event, EventType
from watcher.core.poll import FetchFailed, FetchFailureKind, NotFound
from watcher.core.rules import Route
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, Rule, Settings
from watcher.daemon.health import HealthWatch
from watcher.store import OutboxStatus, SqliteStore, StoreError

pytestmark = pytest.mark.anyio
FAIL = FetchFailed(FetchFailureKind.RETRYABLE, "HTTP 503")


class FlakyStore(SqliteStore):
    """A SQLite store whose `record_events` fails while `broken` is set (a full disk)."""

    broken = False

    def record_events(
        self, events: Sequence[Event], routes: Sequence[tuple[Event, Route]], now: datetime
    ) -> int:
        """Fail while broken, else record."""
        if self.broken:
            raise StoreError("database or disk is full")
        return super().record_events(events, routes, now)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    """A flaky SQLite store in a file."""
    opened = FlakyStore(tmp_path / "state.db")
    yield opened
    opened.close()


def watch(store: FlakyStore, woken: list[set[str]]) -> HealthWatch:
    """A health watch with one rule sending both health events to `ops`."""
    settings = Settings(
        factory=FactorySettings(api_key=Secret("k"), unavailable_after=timedelta(minutes=2)),
        state_path=Path(store.location),
        rules=(
            Rule(
                name="outage",
                on=(EventType.API_UNAVAILABLE, EventType.API_RECOVERED),
                notify=("ops",),
            ),
        ),
    )
    return HealthWatch(
        wiring(settings, store, lambda: T0, wake=lambda targets: woken.append(set(targets)))
    )


def queued(store: FlakyStore) -> list[str]:
    """Event types queued in the outbox."""
    return [str(r.event.type) for r in store.list_outbox(OutboxStatus.PENDING)]  # type: ignore[union-attr]


async def test_outage_declared_while_the_store_fails_is_recorded_with_the_next_answer(
    store: FlakyStore,
) -> None:
    """The outage event that could not be stored is kept and stored once the store works."""
    woken: list[set[str]] = []
    health = watch(store, woken)
    await health.observe(FAIL, T0)
    store.broken = True
    await health.observe(FAIL, T0 + timedelta(minutes=3))  # declared down: store fails
    assert queued(store) == []
    store.broken = False
    await health.observe(FAIL, T0 + timedelta(minutes=4))
    assert queued(store) == ["watcher.api_unavailable"]
    assert woken == [{"ops"}]
    await health.observe(FAIL, T0 + timedelta(minutes=5))
    assert queued(store) == ["watcher.api_unavailable"]


async def test_recovery_that_could_not_be_stored_is_retried_on_the_hot_path(
    store: FlakyStore,
) -> None:
    """After recovery the next success stores the pending recovery event, then nothing more."""
    woken: list[set[str]] = []
    health = watch(store, woken)
    await health.observe(FAIL, T0)
    await health.observe(FAIL, T0 + timedelta(minutes=3))
    store.broken = True
    await health.observe(NotFound(), T0 + timedelta(minutes=4))  # any answer: recovered
    assert health.unrecorded
    store.broken = False
    await health.observe(NotFound(), T0 + timedelta(minutes=5))
    assert sorted(queued(store)) == ["watcher.api_recovered", "watcher.api_unavailable"]
    assert not health.unrecorded
