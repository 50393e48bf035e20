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


def test_outbox_figures_follow_retries_deliveries_dead_letters_and_deletes(store: Store) -> None:
    """Counts and the oldest pending row are right after every kind of write."""
    s = timedelta(seconds=1)
    for n, (sid, target) in enumerate((("a", "hook"), ("b", "hook"), ("c", "hook"), ("d", "ops"))):
        e = event(id=f"e-{sid}", session=ref(id=sid))
        store.record_events([e], [(e, Route("r", target))], T0 + n * s)
    by_session = {r.session_id: r.id for r in store.list_outbox()}

    def figures() -> tuple[dict[str, int], dict[str, int], object]:
        found = store.outbox_figures(["hook", "ops"])
        return dict(found.pending), dict(found.dead), found.oldest_pending_at

    assert figures() == ({"hook": 3, "ops": 1}, {"hook": 0, "ops": 0}, T0)
    store.mark_retry(by_session["a"], T0 + 60 * s, "HTTP 503")  # still pending, as old
    assert figures() == ({"hook": 3, "ops": 1}, {"hook": 0, "ops": 0}, T0)
    store.mark_delivered(by_session["a"], T0 + 61 * s, None)
    assert figures() == ({"hook": 2, "ops": 1}, {"hook": 0, "ops": 0}, T0 + s)
    store.mark_dead(by_session["b"], T0 + 62 * s, "HTTP 410")
    assert figures() == ({"hook": 1, "ops": 1}, {"hook": 1, "ops": 0}, T0 + 2 * s)
    assert store.retry_dead(T0 + 70 * s) == 1  # pending again, queued anew
    assert figures() == ({"hook": 2, "ops": 1}, {"hook": 0, "ops": 0}, T0 + 2 * s)
    store.mark_dead(by_session["b"], T0 + 71 * s, "HTTP 410")
    assert store.purge(OutboxStatus.DEAD) == 1
    assert store.purge(OutboxStatus.DELIVERED) == 1
    assert figures() == ({"hook": 1, "ops": 1}, {"hook": 0, "ops": 0}, T0 + 2 * s)
    store.mark_delivered(by_session["c"], T0 + 72 * s, None)
    store.mark_delivered(by_session["d"], T0 + 72 * s, None)
    assert figures() == ({"hook": 0, "ops": 0}, {"hook": 0, "ops": 0}, None)
