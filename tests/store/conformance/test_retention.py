"""Conformance: retention (pruning batches, the watch set's marks, totals), any backend.

Every case injects its times: rows are finished, recorded and unwatched at
chosen moments, and each pruning call is given its cutoff.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.backends import Backend
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.core.rulestate import Evaluation, Held, Mute, MuteKind, SessionMemory
from watcher.store import Card, OutboxRow, OutboxStatus, PollMark, Pruned, Store, UnreadableState

D = timedelta(days=1)
DELIVERED, DEAD = OutboxStatus.DELIVERED, OutboxStatus.DEAD


def routed(store: Store, e: Event, *targets: str, at: datetime = T0) -> list[int]:
    """Record `e` routed to `targets`; the new rows' ids, in target order."""
    store.record_events([e], [(e, Route("r", t)) for t in targets], at)
    rows = store.list_outbox(OutboxStatus.PENDING)
    by_target = {r.target: r.id for r in rows if isinstance(r, OutboxRow) and r.event.id == e.id}
    return [by_target[t] for t in targets]


def finish(store: Store, row_id: int, status: OutboxStatus, at: datetime) -> None:
    """Mark a row delivered or dead at `at`."""
    if status is DELIVERED:
        store.mark_delivered(row_id, at, None)
    else:
        store.mark_dead(row_id, at, "refused")


def outbox_ids(store: Store, status: OutboxStatus | None = None) -> set[int]:
    """Ids of the stored outbox rows (of `status`)."""
    return {r.id for r in store.list_outbox(status)}


def event_ids(store: Store, session_id: str = "s1") -> set[str]:
    """Ids of the stored events of a session."""
    return {e.id for e in store.recent_events(session_id, limit=1000)}


@pytest.mark.parametrize(
    ("status", "finished_days_ago", "kept"),
    [
        (DELIVERED, [40, 31, 29, 1], {2, 3}),
        (DELIVERED, [30, 30], set()),  # finished exactly at the cutoff: goes
        (DELIVERED, [5], {0}),
        (DEAD, [100, 91, 89], {2}),
    ],
)
def test_finished_rows_before_the_cutoff_go_with_their_events(
    store: Store, status: OutboxStatus, finished_days_ago: list[int], kept: set[int]
) -> None:
    """Rows finished at or before the cutoff go, with the events only they referred to."""
    now = T0 + 200 * D
    keep = 30 * D if status is DELIVERED else 90 * D
    ids = []
    for n, ago in enumerate(finished_days_ago):
        (row_id,) = routed(store, event(id=f"e{n}"), "hook")
        finish(store, row_id, status, now - ago * D)
        ids.append(row_id)
    pruned = store.prune_finished(status, now - keep, 500)
    gone = len(finished_days_ago) - len(kept)
    assert pruned == Pruned({"outbox": gone, "events": gone} if gone else {}, more=False)
    assert outbox_ids(store) == {ids[n] for n in kept}
    assert event_ids(store) == {f"e{n}" for n in kept}


def test_pending_rows_and_events_still_referred_to_are_kept(store: Store) -> None:
    """An event routed to two targets stays while its other row is pending; pending never goes."""
    delivered, pending = routed(store, event(id="shared"), "hook", "slack")
    finish(store, delivered, DELIVERED, T0)
    (old_pending,) = routed(store, event(id="waiting"), "hook")
    assert store.prune_finished(DELIVERED, T0 + 60 * D, 500) == Pruned({"outbox": 1})
    assert outbox_ids(store) == {pending, old_pending}
    assert event_ids(store) == {"shared", "waiting"}
    with pytest.raises(ValueError, match="never pruned"):
        store.prune_finished(OutboxStatus.PENDING, T0 + 60 * D, 500)


def test_a_dead_letter_is_listed_and_retryable_until_keep_dead(store: Store) -> None:
    """Past keep_delivered but not keep_dead, a dead letter is still there to retry."""
    (row_id,) = routed(store, event(id="e1"), "hook")
    finish(store, row_id, DEAD, T0)
    store.prune_finished(DELIVERED, T0 + 60 * D, 500)
    assert store.prune_finished(DEAD, T0 - 1 * D, 500) == Pruned({})
    assert outbox_ids(store, DEAD) == {row_id}
    assert store.retry_dead(T0 + 60 * D) == 1


def test_finished_rows_go_in_batches_of_the_limit(store: Store) -> None:
    """Five old rows with a limit of two: three calls, `more` until the last."""
    for n in range(5):
        (row_id,) = routed(store, event(id=f"e{n}"), "hook")
        finish(store, row_id, DELIVERED, T0 + n * timedelta(seconds=1))
    cutoff = T0 + D
    batches = [store.prune_finished(DELIVERED, cutoff, 2) for _ in range(3)]
    assert [(b.total, b.more) for b in batches] == [(4, True), (4, True), (2, False)]
    assert outbox_ids(store) == set()


@pytest.mark.parametrize(
    ("recorded_days_ago", "held", "routed_to", "kept"),
    [
        (40, False, (), False),  # matched no rule, old: goes
        (10, False, (), True),  # recent: kept
        (40, True, (), True),  # held for a digest: kept
        (40, False, ("hook",), True),  # a pending row refers to it: kept
    ],
)
def test_events_nothing_refers_to_go_after_keep_delivered(
    store: Store, recorded_days_ago: int, held: bool, routed_to: tuple[str, ...], kept: bool
) -> None:
    """Unrouted, unheld events recorded before the cutoff go; anything referred to stays."""
    now = T0 + 100 * D
    at = now - recorded_days_ago * D
    e = event(id="e1")
    evaluation = Evaluation(
        memory=SessionMemory(),
        held=(Held("slack", "night", at + D, e, "r"),) if held else (),
    )
    store.record("s1", snap(), [e], [(e, Route("r", t)) for t in routed_to], at)
    if held:
        store.record_evaluation("s1", evaluation, at)
    store.prune_events(now - 30 * D, 500)
    assert event_ids(store) == ({"e1"} if kept else set())


def test_events_go_in_batches_of_the_limit(store: Store) -> None:
    """Three unreferenced events with a limit of two: two calls."""
    store.record("s1", snap(), [event(id=f"e{n}") for n in range(3)], [], T0)
    first, second = (store.prune_events(T0 + D, 2) for _ in range(2))
    assert (first, second) == (Pruned({"events": 2}, more=True), Pruned({"events": 1}))


def remember_everything(store: Store, backend: Backend, session_id: str, at: datetime) -> None:
    """Give `session_id` a row in every table that names a session."""
    e = event(id=f"{session_id}-e", session=ref(id=session_id))
    h = event(EventType.ARCHIVED, id=f"{session_id}-h", session=ref(id=session_id))
    evaluation = Evaluation(
        memory=SessionMemory(),
        held=(Held("slack", "night", at + D, h, "r"),),
        wake_at=at + D,
    )
    store.record(session_id, snap(session_id=session_id), [e, h], [], at, evaluation=evaluation)
    store.record_discovery(at, None, [session_id], [])
    store.intend_card(Card("slack", session_id, "C1", None, "m"), at)
    store.add_mute(Mute(MuteKind.SESSION, session_id, at + D), at)
    store.record_housekeeping([PollMark(session_id, at, "changed", None)], {})


def test_a_session_unwatched_long_enough_is_forgotten_with_all_its_rows(
    store: Store, backend: Backend
) -> None:
    """State, memory, held, decisions, cards, polls, discovered, expired mutes and events go."""
    remember_everything(store, backend, "old", T0)
    remember_everything(store, backend, "kept", T0)
    store.note_watched({"kept"}, T0 + D)
    assert store.unwatched_since("old") == T0 + D
    assert store.unwatched_since("kept") is None
    now = T0 + 40 * D
    pruned = store.forget_sessions(now - 30 * D, {"kept"}, now, 500)
    assert pruned == Pruned(
        {
            "cards": 1,
            "discovered": 1,
            "events": 2,
            "held": 1,
            "mutes": 1,
            "polls": 1,
            "rule_memory": 1,
            "sequences": 1,
            "sessions": 1,
        }
    )
    assert store.load_state("old") is None
    assert event_ids(store, "old") == set()
    assert store.card("slack", "old") is None
    assert store.discovered().session_ids == {"kept"}
    assert store.held_count() == 1
    assert [m.value for m in store.active_mutes(T0)] == ["kept"]
    for table, rows in [
        ("sessions", 1),
        ("rule_memory", 1),
        ("polls", 1),
        ("cards", 1),
        ("sequences", 1),
    ]:
        assert backend.count(table) == rows, table
    assert store.load_state("kept") is not None


@pytest.mark.parametrize(
    ("case", "watched_now", "unwatched_at", "written_at", "forgotten"),
    [
        ("unwatched 31 days", set(), 0, 0, True),
        ("unwatched 29 days", set(), 2, 0, False),
        ("still watched, never noted", {"s1"}, None, 0, False),
        ("in the watch set passed in", {"s1"}, 0, 0, False),
        ("written again since the cutoff", set(), 0, 20, False),
    ],
)
def test_only_sessions_unwatched_for_the_whole_retention_are_forgotten(
    store: Store,
    case: str,
    watched_now: set[str],
    unwatched_at: int | None,
    written_at: int,
    forgotten: bool,
) -> None:
    """A session watched (even never polled), recently unwatched or re-found is kept."""
    store.record("s1", snap(), [], [], T0 + written_at * D)
    if unwatched_at is not None:
        store.note_watched(set(), T0 + unwatched_at * D)
    now = T0 + 31 * D
    store.forget_sessions(now - 30 * D, watched_now, now, 500)
    assert (store.load_state("s1") is None) is forgotten, case


def test_noting_the_watch_set_marks_leaving_and_clears_returning(store: Store) -> None:
    """Left: marked once (not moved on later); back in the set: watched again."""
    store.record("s1", snap(), [], [], T0)
    store.note_watched({"s1"}, T0)
    assert store.unwatched_since("s1") is None
    store.note_watched(set(), T0 + D)
    store.note_watched(set(), T0 + 2 * D)
    assert store.unwatched_since("s1") == T0 + D
    store.note_watched({"s1", "never-stored"}, T0 + 3 * D)
    assert store.unwatched_since("s1") is None
    assert store.unwatched_since("never-stored") is None


def test_a_forgotten_session_numbers_its_events_on_from_its_last_sequence(store: Store) -> None:
    """The sequence is never reused: a session seen again continues where it stopped."""
    first = event(id="a1")
    store.record("s1", snap(), [first], [(first, Route("r", "hook"))], T0)
    (row,) = store.due("hook", T0, 10)
    store.mark_delivered(row.id, T0, None)
    store.prune_finished(DELIVERED, T0 + D, 500)
    store.note_watched(set(), T0)
    store.forget_sessions(T0 + D, set(), T0 + D, 500)
    assert store.load_state("s1") is None
    again = event(id="a2")
    store.record("s1", snap(), [again], [(again, Route("r", "hook"))], T0 + 2 * D)
    (row,) = store.due("hook", T0 + 2 * D, 10)
    assert isinstance(row, OutboxRow)
    assert row.event.sequence == 2


def test_a_session_with_many_events_is_forgotten_over_several_batches(
    store: Store, backend: Backend
) -> None:
    """Its state stays until its last events go, so it is never half forgotten yet unmarked."""
    store.record("s1", snap(), [event(id=f"e{n}") for n in range(5)], [], T0)
    store.note_watched(set(), T0)
    batches = [store.forget_sessions(T0 + D, set(), T0 + D, 2) for _ in range(3)]
    assert [b.rows for b in batches] == [{"events": 2}, {"events": 2}, {"events": 1, "sessions": 1}]
    assert [b.more for b in batches] == [True, True, False]
    assert backend.count("sessions") == 0


def test_pruned_totals_add_up_and_survive_a_reopen(store: Store, backend: Backend) -> None:
    """Running totals per table, kept in the store; the size is the database's pages."""
    assert store.pruned_totals() == {}
    for n in range(3):
        (row_id,) = routed(store, event(id=f"e{n}"), "hook")
        finish(store, row_id, DELIVERED, T0)
        store.prune_finished(DELIVERED, T0 + D, 500)
    reopened = backend.open()
    try:
        assert reopened.pruned_totals() == {"outbox": 3, "events": 3}
        assert reopened.database_bytes() > 0
    finally:
        reopened.close()


def test_rows_set_aside_as_unreadable_go_after_the_retention(
    store: Store, backend: Backend
) -> None:
    """A session row set aside at start is kept for a look, then goes with the cutoff."""
    for session_id in ("early", "late"):
        store.record(session_id, snap(session_id=session_id), (), (), T0)
    store.set_aside_states([UnreadableState("early", "damaged")], T0)
    store.set_aside_states([UnreadableState("late", "damaged")], T0 + 20 * D)
    now = T0 + 40 * D
    pruned = store.forget_sessions(now - 30 * D, set(), now, 500)
    assert pruned.rows.get("sessions_set_aside") == 1
    assert [row[0] for row in backend.set_aside_states()] == ["late"]


def test_forgotten_sessions_leave_no_sequence_row_and_new_lanes_start_above_them(
    store: Store, backend: Backend
) -> None:
    """No row per session ever seen: new lanes start above the highest number forgotten."""
    for session_id, count in (("old", 3), ("older", 2)):
        events = [event(id=f"{session_id}{n}", session=ref(id=session_id)) for n in range(count)]
        store.record(
            session_id,
            snap(session_id=session_id),
            events,
            [(e, Route("r", "hook")) for e in events],
            T0,
        )
    while due := store.due("hook", T0, 100):  # the oldest pending row of each session
        for row in due:
            store.mark_delivered(row.id, T0, None)
    store.prune_finished(DELIVERED, T0 + D, 500)
    store.note_watched(set(), T0)
    store.forget_sessions(T0 + D, set(), T0 + D, 500)
    assert backend.count("sequences") == 0
    fresh = event(id="new1", session=ref(id="new"))
    again = event(id="old9", session=ref(id="old"))
    routes = [(fresh, Route("r", "hook")), (again, Route("r", "hook"))]
    store.record("new", snap(session_id="new"), [fresh], routes[:1], T0 + 2 * D)
    store.record("old", snap(session_id="old"), [again], routes[1:], T0 + 2 * D)
    numbers = {
        row.event.session.id: row.event.sequence
        for row in store.due("hook", T0 + 2 * D, 10)
        if isinstance(row, OutboxRow) and row.event.session is not None
    }
    assert numbers == {"new": 4, "old": 4}  # above 3, the highest number forgotten
