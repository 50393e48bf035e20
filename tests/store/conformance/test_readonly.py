"""Conformance: what `status` reads through the read-only view (any backend)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.backends import Backend
from watcher.core.model import Event, EventType, Gone
from watcher.core.rules import Route
from watcher.store import (
    OutboxRow,
    OutboxStatus,
    PollMark,
    StatusRows,
    Store,
    StoreError,
)
from watcher.store.rows import TargetBacklog


def read_status(backend: Backend, configured: list[str]) -> StatusRows:
    """`read_status` through a fresh read-only view, closed after."""
    view = backend.read_only()
    try:
        return view.read_status(configured)
    finally:
        view.close()


def test_the_status_figures_follow_writes_retries_dead_letters_and_deletes(
    store: Store, backend: Backend
) -> None:
    """States, since, last notified and backlogs follow each write; deleting rows keeps them."""
    sec = timedelta(seconds=1)
    store.record("s1", snap(), [], [], T0)
    store.record("s2", Gone("s2", snap(session_id="s2", status="idle")), [], [], T0)
    store.record("s3", Gone("s3", None), [], [], T0)
    events = [
        event(id="e1", occurred_at=T0),
        event(EventType.ARCHIVED, id="e2", occurred_at=T0 + 9 * sec),  # changes no status
        event(EventType.DELETED, id="e3", occurred_at=T0 + 5 * sec, session=ref(id="s2")),
        event(id="e4", occurred_at=T0 + 3 * sec),
    ]
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    ids = {r.event.id: r.id for r in store.list_outbox() if isinstance(r, OutboxRow)}
    watched = ["s1", "s2", "s3"]
    rows = read_status(backend, watched)
    assert rows.states == {"s1": ("running", False), "s2": ("idle", True), "s3": (None, True)}
    assert rows.since == {"s1": T0 + 3 * sec, "s2": T0 + 5 * sec}
    assert rows.notified == {}
    assert rows.targets == (TargetBacklog("hook", 4, 0, None, 0, None),)
    assert rows.database_bytes
    store.mark_retry(ids["e1"], T0 + 60 * sec, "HTTP 503")
    store.mark_delivered(ids["e3"], T0 + 7 * sec, None)
    store.mark_dead(ids["e2"], T0 + 8 * sec, "HTTP 410")
    rows = read_status(backend, watched)
    assert rows.notified == {"s2": T0 + 7 * sec}
    assert rows.targets == (TargetBacklog("hook", 2, 1, T0 + 60 * sec, 1, "HTTP 410"),)
    [dead] = rows.dead_letters
    assert (dead.id, dead.event_type, dead.session_id, dead.failed_at, dead.last_error) == (
        ids["e2"],
        "session.archived",
        "s1",
        T0 + 8 * sec,
        "HTTP 410",
    )
    store.mark_delivered(ids["e1"], T0 + 20 * sec, None)
    store.purge(OutboxStatus.DEAD)
    store.record("s1", snap(status="idle"), [], [], T0 + 30 * sec)
    rows = read_status(backend, watched)
    assert rows.states["s1"] == ("idle", False)
    assert rows.notified == {"s1": T0 + 20 * sec, "s2": T0 + 7 * sec}
    assert rows.targets == (TargetBacklog("hook", 1, 0, None, 0, None),)
    assert rows.dead_letters == ()
    store.purge(OutboxStatus.DELIVERED)  # deleting history keeps what it told
    after = read_status(backend, watched)
    assert (after.notified, after.since) == (rows.notified, rows.since)


def test_status_reads_the_daemons_watched_set_and_meta(store: Store, backend: Backend) -> None:
    """Once a daemon wrote its watched set, only those sessions (and their marks) are read."""
    store.record("s1", snap(), [], [], T0)
    store.record("s2", snap(session_id="s2"), [], [], T0)
    assert set(read_status(backend, ["s1", "s2"]).states) == {"s1", "s2"}
    store.record_housekeeping(
        [PollMark("s2", T0, "ok", None), PollMark("s1", T0, "ok", None)],
        {"watched": '[{"id": "s2", "name": null}]', "api_state": "up"},
    )
    rows = read_status(backend, ["s1"])
    assert set(rows.states) == {"s2"}
    assert rows.polls == {"s2": PollMark("s2", T0, "ok", None)}
    assert rows.meta["api_state"] == "up"
    store.prune_finished(OutboxStatus.DELIVERED, T0, 10)
    assert read_status(backend, []).rows_pruned == {}


@pytest.mark.parametrize("value", ["{broken", '{"id": "s1"}', "[1]"])
def test_a_damaged_watched_set_is_a_store_error(store: Store, backend: Backend, value: str) -> None:
    """The daemon's watched set that cannot be read is a clear error, not a traceback."""
    store.record_housekeeping([], {"watched": value})
    with pytest.raises(StoreError, match="watched set in the state database cannot be read"):
        read_status(backend, ["s1"])


def test_the_read_only_view_reads_report_runs_and_history_as_the_store_does(
    store: Store, backend: Backend
) -> None:
    """`status` lists each report's last run; `report NAME` reads the store's history."""
    assert read_status(backend, []).report_runs == {}
    s = event(id="e1", session=ref(id="s1"), data={"from": "idle", "to": "running"})
    store.record("s1", snap(), [s], [], T0)
    done = event(id="e2", session=ref(id="s1"), data={"from": "running", "to": "idle"})
    store.record("s1", snap(status="idle"), [done], [], T0 + timedelta(minutes=5))
    r = Event("report:daily", EventType.REPORT, T0, None, {"report": "daily"})
    store.record_report("daily", T0, r, [(r, Route("report:daily", "hook"))], T0)
    assert read_status(backend, []).report_runs == {"daily": T0}
    view = backend.read_only()
    try:
        assert view.report_runs() == {"daily": T0}
        start, end = T0 + timedelta(minutes=1), T0 + timedelta(minutes=10)
        assert view.report_history(start, end) == store.report_history(start, end)
        assert [e.event.id for e in view.report_history(start, end).events] == ["e2"]
        assert view.report_history(start, end).run_starts == {"s1": T0}
    finally:
        view.close()
