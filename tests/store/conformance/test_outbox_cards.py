"""Conformance: the outbox (lanes, retries, dead letters) and live cards (any backend)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref
from tests.store.backends import Backend
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.store import Card, OutboxRow, OutboxStatus, Store, UnreadableRow


def two_events() -> list[Event]:
    """Two events on s1 and one on s2."""
    return [
        event(id="e1"),
        event(EventType.ARCHIVED, id="e2"),
        event(id="e3", session=ref(id="s2")),
    ]


def event_ids(rows: list[OutboxRow | UnreadableRow]) -> list[str]:
    """The event ids of readable rows, in order."""
    return [r.event.id for r in rows if isinstance(r, OutboxRow)]


def test_due_returns_one_head_per_session_lane_in_order(store: Store) -> None:
    """Only the oldest pending row of each session is due, so order per session holds."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    due = store.due("slack", T0, 10)
    assert event_ids(due) == ["e1", "e3"]
    store.mark_delivered(due[0].id, T0, "ts1")
    assert event_ids(store.due("slack", T0, 10)) == ["e2", "e3"]
    assert store.due("other", T0, 10) == []
    assert event_ids(store.due("slack", T0, 1)) == ["e2"]  # limit


def test_retry_holds_the_lane_until_due(store: Store) -> None:
    """A row waiting for its retry blocks later rows of its session, not of others."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    first = store.due("slack", T0, 10)[0]
    store.mark_retry(first.id, T0 + timedelta(seconds=30), "HTTP 503")
    assert event_ids(store.due("slack", T0, 10)) == ["e3"]
    assert store.next_due("slack") == T0
    later = store.due("slack", T0 + timedelta(seconds=31), 10)
    assert isinstance(later[0], OutboxRow)
    assert (later[0].event.id, later[0].attempts, later[0].last_error) == ("e1", 1, "HTTP 503")


def test_next_due_is_the_earliest_lane_head(store: Store) -> None:
    """None with nothing pending; otherwise when the earliest head becomes due."""
    assert store.next_due("hook") is None
    e = event()
    store.record_events([e], [(e, Route("r", "hook"))], T0)
    (row,) = store.due("hook", T0, 10)
    store.mark_retry(row.id, T0 + timedelta(minutes=2), "HTTP 500")
    assert store.next_due("hook") == T0 + timedelta(minutes=2)
    store.mark_delivered(row.id, T0, None)
    assert store.next_due("hook") is None


def test_a_delivered_row_keeps_its_history(store: Store) -> None:
    """Delivered: attempts counted, finish time kept, error cleared, never due again."""
    e = event()
    store.record_events([e], [(e, Route("r", "hook"))], T0)
    (row,) = store.due("hook", T0, 10)
    store.mark_retry(row.id, T0, "HTTP 503")
    store.mark_delivered(row.id, T0 + timedelta(seconds=5), "handle")
    (done,) = store.list_outbox(OutboxStatus.DELIVERED)
    assert isinstance(done, OutboxRow)
    assert (done.status, done.attempts, done.last_error, done.finished_at) == (
        OutboxStatus.DELIVERED,
        2,
        None,
        T0 + timedelta(seconds=5),
    )
    assert store.due("hook", T0 + timedelta(days=1), 10) == []


def test_dead_letters_can_be_listed_retried_and_purged(store: Store) -> None:
    """Dead rows are kept with their error, can be queued again, or purged."""
    e = event()
    store.record_events([e], [(e, Route("r", "slack"))], T0)
    row = store.due("slack", T0, 1)[0]
    store.mark_dead(row.id, T0, "permanent failure: invalid_auth")
    dead = store.list_outbox(OutboxStatus.DEAD)
    assert [(d.id, d.last_error, d.attempts) for d in dead] == [
        (row.id, "permanent failure: invalid_auth", 1)
    ]
    assert store.due("slack", T0, 1) == []
    assert store.retry_dead(T0, [row.id + 100]) == 0
    assert store.retry_dead(T0) == 1
    assert store.due("slack", T0, 1)[0].attempts == 0
    store.mark_dead(row.id, T0, "again")
    assert store.purge(OutboxStatus.DEAD) == 1
    assert store.list_outbox() == []
    with pytest.raises(ValueError, match="cannot be purged"):
        store.purge(OutboxStatus.PENDING)


def test_list_outbox_is_newest_first_and_filters_by_status(store: Store) -> None:
    """Newest first, `limit` rows at most; counts cover every status."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    ids = [r.id for r in store.list_outbox()]
    assert ids == sorted(ids, reverse=True)
    assert len(store.list_outbox(limit=2)) == 2
    store.mark_delivered(ids[-1], T0, None)
    assert [r.id for r in store.list_outbox(OutboxStatus.DELIVERED)] == [ids[-1]]
    assert store.counts() == {
        OutboxStatus.PENDING: 2,
        OutboxStatus.DELIVERED: 1,
        OutboxStatus.DEAD: 0,
    }
    assert store.purge(OutboxStatus.DELIVERED, [ids[-1]]) == 1
    assert store.counts()[OutboxStatus.DELIVERED] == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{", "JSONDecodeError"),
        ("[]", "TypeError"),
        ('{"id": "e1"}', "KeyError: 'session'"),
        (
            '{"id": "e1", "type": "session.exploded", "occurred_at": 0, "session": null,'
            ' "data": {}}',
            "ValueError",
        ),
    ],
)
def test_a_row_whose_event_cannot_be_read_comes_back_unreadable(
    store: Store, backend: Backend, body: str, reason: str
) -> None:
    """Loading never raises: the damaged row says why, the others load as usual."""
    events = two_events()
    store.record_events(events, [(e, Route("r", "hook")) for e in events], T0)
    backend.overwrite_event_body("e1", body)
    due = store.due("hook", T0, 10)
    assert [type(r).__name__ for r in due] == ["UnreadableRow", "OutboxRow"]
    bad = due[0]
    assert isinstance(bad, UnreadableRow)
    assert (bad.event_id, bad.event_type, bad.session_id) == ("e1", "session.status_changed", "s1")
    assert bad.reason.startswith("stored event cannot be read: ")
    assert reason in bad.reason
    assert {r.id for r in store.list_outbox()} == {r.id for r in due} | {2}


def test_a_card_is_intended_then_recorded_with_its_rows(store: Store) -> None:
    """The intent commits before the post; the ts and the delivered rows commit together."""
    events = [event(id="e1"), event(EventType.ARCHIVED, id="e2")]
    store.record_events(events, [(e, Route("r", "slack")) for e in events], T0)
    assert store.card("slack", "s1") is None
    lane = store.pending_lane("slack", "s1", 10)
    assert [r.id for r in lane] == [1, 2]
    assert [r.id for r in store.pending_lane("slack", "s1", 1)] == [1]
    store.intend_card(Card("slack", "s1", "C1", None, "m1", replaced_ts="0.1"), T0)
    intended = store.card("slack", "s1")
    assert intended == Card("slack", "s1", "C1", None, "m1", T0, "0.1")
    store.drop_card_intent("slack", "s1", T0)
    assert store.card("slack", "s1") == replace(intended, posting_since=None)
    store.intend_card(Card("slack", "s1", "C1", None, "m2"), T0)
    store.record_card("slack", "s1", "1.5", [1, 2], T0)
    assert store.card("slack", "s1") == Card("slack", "s1", "C1", "1.5", "m2")
    rows = store.list_outbox()
    assert {(r.status, r.id) for r in rows} == {
        (OutboxStatus.DELIVERED, 1),
        (OutboxStatus.DELIVERED, 2),
    }
    assert store.pending_lane("slack", "s1", 10) == []


def test_a_replacing_card_keeps_what_it_replaces(store: Store) -> None:
    """Reason and permalink of the replaced card round-trip; the intent time is kept."""
    since = T0 - timedelta(seconds=3)
    card = Card("slack", "s1", "C1", None, "m1", since, "0.1", "too old", "https://x/p0.1")
    store.intend_card(card, T0)
    assert store.card("slack", "s1") == card
    store.record_card("slack", "s1", "2.5", [], T0)
    assert store.card("slack", "s1") == replace(card, ts="2.5", posting_since=None)
    store.drop_card_intent("slack", "s1", T0)  # a known card has no intent to drop
    assert store.card("slack", "s1") == replace(card, ts="2.5", posting_since=None)
