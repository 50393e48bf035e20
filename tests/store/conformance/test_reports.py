"""Conformance: scheduled reports' runs, recorded exactly once per scheduled time (any backend)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.core.factories import T0, event, ref
from tests.store.backends import Backend
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.store import OutboxRow, OutboxStatus, Store

M = timedelta(minutes=1)


def report(name: str, at: datetime) -> Event:
    """The event of report `name`'s run for `at` (the id the report part gives it)."""
    return Event(
        id=f"report:{name}:{at.isoformat()}",
        type=EventType.REPORT,
        occurred_at=at,
        session=None,
        data={"report": name, "counts": {"finished": 2}},
    )


def routed(e: Event, *targets: str) -> list[tuple[Event, Route]]:
    """`e` routed to `targets` by its report."""
    return [(e, Route(e.id.split(":")[1], t)) for t in targets]


def test_a_store_without_runs_has_none(store: Store) -> None:
    """No report has run on fresh data."""
    assert store.report_runs() == {}


def test_a_run_is_recorded_with_its_event_and_one_row_per_target(store: Store) -> None:
    """The run, the event and its outbox rows are stored; the new rows are counted."""
    e = report("daily", T0)
    assert store.record_report("daily", T0, e, routed(e, "hook", "slack"), T0 + M) == 2
    assert store.report_runs() == {"daily": T0}
    rows = [r for r in store.list_outbox(OutboxStatus.PENDING) if isinstance(r, OutboxRow)]
    assert sorted(r.target for r in rows) == ["hook", "slack"]
    assert {r.event.id for r in rows} == {e.id}
    assert rows[0].event.type is EventType.REPORT
    assert rows[0].event.data == e.data


@pytest.mark.parametrize("again", [T0, T0 - M, T0 - timedelta(days=1)])
def test_a_time_at_or_before_the_last_run_records_nothing(
    store: Store, backend: Backend, again: datetime
) -> None:
    """Exactly once: the same scheduled time (or an older one) adds no run, event or row."""
    first = report("daily", T0)
    store.record_report("daily", T0, first, routed(first, "hook"), T0)
    e = report("daily", again)
    events, rows = backend.count("events"), backend.count("outbox")
    assert store.record_report("daily", again, e, routed(e, "hook"), T0 + M) == 0
    assert store.report_runs() == {"daily": T0}
    assert (backend.count("events"), backend.count("outbox")) == (events, rows)


def test_a_later_time_is_recorded_and_becomes_the_last_run(store: Store) -> None:
    """Each later scheduled time is one more run; the last run moves forward."""
    for n in range(3):
        e = report("minutely", T0 + n * M)
        assert store.record_report("minutely", T0 + n * M, e, routed(e, "hook"), T0 + n * M) == 1
    assert store.report_runs() == {"minutely": T0 + 2 * M}
    assert store.counts()[OutboxStatus.PENDING] == 3


def test_reports_keep_their_own_last_runs(store: Store) -> None:
    """One report's run never stands in for another's at the same time."""
    for name in ("daily", "weekly"):
        e = report(name, T0)
        assert store.record_report(name, T0, e, routed(e, "hook"), T0) == 1
    assert store.report_runs() == {"daily": T0, "weekly": T0}


def test_a_run_without_targets_is_still_recorded(store: Store, backend: Backend) -> None:
    """A skipped empty report records its run (not retried) and queues nothing."""
    e = report("daily", T0)
    assert store.record_report("daily", T0, e, [], T0) == 0
    assert store.report_runs() == {"daily": T0}
    assert backend.count("outbox") == 0


def test_runs_survive_a_restart_and_a_second_store_records_nothing(backend: Backend) -> None:
    """Reopened data (a restart, a second daemon) knows the run: that time is not queued again."""
    first = backend.open()
    try:
        e = report("daily", T0)
        first.record_report("daily", T0, e, routed(e, "hook"), T0)
        second = backend.open()
        try:
            assert second.report_runs() == {"daily": T0}
            assert second.record_report("daily", T0, e, routed(e, "hook"), T0 + M) == 0
        finally:
            second.close()
    finally:
        first.close()
    assert backend.count("outbox") == 1


def test_a_run_whose_rows_cannot_be_stored_is_not_recorded(store: Store) -> None:
    """One transaction: when a row cannot be written, neither the run nor the event is kept."""
    e = report("daily", T0)
    stray = event(id="never-stored", session=ref(id="s9"))  # a route to an event not stored
    with pytest.raises(Exception):  # noqa: B017 (each backend has its own error)
        store.record_report("daily", T0, e, [*routed(e, "hook"), (stray, Route("daily", "x"))], T0)
    assert store.report_runs() == {}
    assert store.counts()[OutboxStatus.PENDING] == 0
    assert store.record_report("daily", T0, e, routed(e, "hook"), T0) == 1


def test_a_report_waits_behind_no_session_in_its_target(store: Store) -> None:
    """A report has its own lane: a session's pending row does not hold it back."""
    s = event(id="e-s1", session=ref(id="s1"))
    store.record_events([s], [(s, Route("finished", "hook"))], T0)
    e = report("daily", T0)
    store.record_report("daily", T0, e, routed(e, "hook"), T0)
    due = [
        r.event_id if not isinstance(r, OutboxRow) else r.event.id
        for r in store.due("hook", T0, 10)
    ]
    assert due == ["e-s1", e.id]


def test_a_damaged_run_time_leaves_out_that_report_only(store: Store, backend: Backend) -> None:
    """A last run whose time cannot be read is left out; the other reports' runs still read."""
    for name in ("daily", "weekly"):
        e = report(name, T0)
        store.record_report(name, T0, e, routed(e, "hook"), T0)
    backend.overwrite_report_run("weekly", 1e300)
    assert store.report_runs() == {"daily": T0}
    view = backend.read_only()
    try:
        assert view.report_runs() == {"daily": T0}
    finally:
        view.close()
