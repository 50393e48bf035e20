"""Writers at once on one PostgreSQL database: per-session sequences stay strictly increasing,
with no number given twice, and one transition (or one report's run) recorded by two writers
is queued once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.store import OutboxRow, OutboxStatus
from watcher.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres
WRITERS = 4
EACH = 25


def run_at_once(jobs: list[Callable[[], None]]) -> list[BaseException]:
    """Run `jobs` in threads released together; the errors they raised."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        barrier.wait()
        try:
            job()
        except BaseException as error:  # reported by the caller's assertion
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_writers_at_once_never_share_or_skip_a_sequence_number(pg_url: str) -> None:
    """Two stores, two threads each, one session: numbers 1..N, each once, in commit order."""
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]

    def writer(n: int) -> Callable[[], None]:
        def job() -> None:
            store = stores[n % 2]
            for k in range(EACH):
                e = event(id=f"w{n}-{k}", session=ref(id="s1"))
                at = T0 + timedelta(seconds=k)
                store.record("s1", snap(), [e], [(e, Route("r", "hook"))], at)

        return job

    try:
        assert run_at_once([writer(n) for n in range(WRITERS)]) == []
        rows = [
            r for r in stores[0].list_outbox(OutboxStatus.PENDING, 1000) if isinstance(r, OutboxRow)
        ]
        numbers = sorted(r.event.sequence for r in rows)
        assert numbers == list(range(1, WRITERS * EACH + 1))
        # Within each writer, later records got higher numbers (strictly increasing).
        for n in range(WRITERS):
            mine = sorted(
                (int(r.event.id.split("-")[1]), r.event.sequence)
                for r in rows
                if r.event.id.startswith(f"w{n}-")
            )
            assert [s for _, s in mine] == sorted(s for _, s in mine)
    finally:
        for store in stores:
            store.close()


def test_one_transition_recorded_by_two_writers_at_once_is_queued_and_numbered_once(
    pg_url: str,
) -> None:
    """Same event, same target, two stores at once: one outbox row, one number."""
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    e = event(id="same", session=ref(id="s1"))
    new: list[int] = []

    def job(store: PostgresStore) -> Callable[[], None]:
        return lambda: new.append(store.record("s1", snap(), [e], [(e, Route("r", "hook"))], T0))

    try:
        assert run_at_once([job(s) for s in stores]) == []
        assert sorted(new) == [0, 1]
        (row,) = stores[0].list_outbox()
        assert isinstance(row, OutboxRow)
        assert row.event.sequence == 1
    finally:
        for store in stores:
            store.close()


def test_one_report_run_recorded_by_two_writers_at_once_is_queued_once(pg_url: str) -> None:
    """Same report, same scheduled time, two stores at once: one run, one event, one row."""
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    new: list[int] = []

    def job(store: PostgresStore, n: int) -> Callable[[], None]:
        # Each writer makes its own event for the time, as two daemons would.
        e = Event(f"report:daily:{n}", EventType.REPORT, T0, None, {"report": "daily"})
        return lambda: new.append(
            store.record_report("daily", T0, e, [(e, Route("report:daily", "hook"))], T0)
        )

    try:
        assert run_at_once([job(s, n) for n, s in enumerate(stores)]) == []
        assert sorted(new) == [0, 1]
        assert stores[0].report_runs() == {"daily": T0}
        (row,) = stores[0].list_outbox()
        assert isinstance(row, OutboxRow)
        assert row.event.type is EventType.REPORT
    finally:
        for store in stores:
            store.close()
