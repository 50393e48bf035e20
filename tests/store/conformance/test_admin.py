"""Conformance: housekeeping, figures, health, location and the delivery store (any backend)."""

from __future__ import annotations

from datetime import timedelta

from tests.core.factories import T0, event, ref
from watcher.core.rules import Route
from watcher.store import OutboxFigures, OutboxStatus, PollMark, Store


def test_outbox_figures_count_pending_and_dead_per_target(store: Store) -> None:
    """Per asked target: pending and dead rows; the oldest pending row over all of them."""
    for n, sid in enumerate(("a", "b", "c")):
        e = event(id=f"e-{sid}", session=ref(id=sid))
        store.record_events([e], [(e, Route("r", "hook"))], T0 + timedelta(seconds=n))
    (head, *_) = store.due("hook", T0 + timedelta(minutes=1), 10)
    store.mark_dead(head.id, T0, "gone")
    assert store.outbox_figures(["hook", "slack"]) == OutboxFigures(
        {"hook": 2, "slack": 0}, {"hook": 1, "slack": 0}, T0 + timedelta(seconds=1)
    )
    assert store.outbox_figures([]) == OutboxFigures({}, {}, None)


def test_housekeeping_batches_are_written_and_overwritten(store: Store) -> None:
    """Poll marks and meta values are upserted in one call (no error on a second batch)."""
    marks = [PollMark("s1", T0, "changed", T0 + timedelta(seconds=30))]
    store.record_housekeeping(marks, {"api_state": "up"})
    store.record_housekeeping(
        [PollMark("s1", T0 + timedelta(seconds=30), "unchanged", None)], {"api_state": "down"}
    )
    store.record_housekeeping([], {})
    assert store.integrity_ok()


def test_the_delivery_store_sees_and_marks_the_same_outbox(store: Store) -> None:
    """`for_delivery` reads what the store recorded; its marks are seen by the store."""
    marks = store.for_delivery()
    try:
        e = event(id="e1", session=ref(id="s1"))
        store.record_events([e], [(e, Route("r", "hook"))], T0)
        (row,) = marks.due("hook", T0, 10)
        marks.mark_delivered(row.id, T0, None)
        assert store.counts()[OutboxStatus.DELIVERED] == 1
    finally:
        if marks is not store:
            marks.close()


def test_the_location_names_where_the_data_is(store: Store) -> None:
    """A non-empty description for log lines."""
    assert store.location
