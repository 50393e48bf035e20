"""Fencing and claims on the real server: a second connection plays the other replica.

A fenced store writes only while its epoch holds the lease; a stale write is
refused, counted and leaves nothing behind. `due` claims lane heads under the
epoch, skipping a lane whose head another transaction holds (never a later
row of it), and a takeover requeues an older epoch's claims.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.core.factories import T0, event, ref, snap
from watcher.core.model import Event, EventType
from watcher.core.rules import Route
from watcher.core.rulestate import Mute, MuteKind
from watcher.store import FencedError, LeaderStore, OutboxRow, OutboxStatus, PollMark
from watcher.store.postgres import PostgresStore

pytestmark = pytest.mark.postgres

# The contract's acquire, as the leadership code runs it.
ACQUIRE = (
    "INSERT INTO leader_lease VALUES ('leader', %(holder)s, 1, now(), now(), now() + %(ttl)s)"
    " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = leader_lease.epoch + 1,"
    " acquired_at = now(), renewed_at = now(), expires_at = EXCLUDED.expires_at"
    " WHERE leader_lease.expires_at <= now() RETURNING epoch"
)
TTL = timedelta(seconds=30)


def acquire(url: str, holder: str) -> int | None:
    """Take the lease on a connection of its own, as another replica would; its epoch."""
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute(ACQUIRE, {"holder": holder, "ttl": TTL}).fetchone()
    return None if row is None else int(row[0])


def expire(url: str) -> None:
    """The lease lapses (its holder stopped renewing)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE leader_lease SET expires_at = now() - interval '1 second'")


@pytest.fixture
def leader(pg_url: str) -> Iterator[LeaderStore]:
    """A fenced store on a fresh database whose epoch holds the lease."""
    store = PostgresStore(pg_url, fenced=True)
    epoch = acquire(pg_url, "a:1:aaaa")
    assert epoch == 1
    store.set_epoch(epoch)
    yield store
    store.close()


def queue(store: LeaderStore, *pairs: tuple[str, str]) -> None:
    """Record one routed event per (event id, session), in order, for target `hook`."""
    for n, (event_id, session_id) in enumerate(pairs):
        e = event(id=event_id, session=ref(id=session_id))
        store.record_events([e], [(e, Route("r", "hook"))], T0 + timedelta(seconds=n))


REPORT = Event(
    id="report:daily", type=EventType.REPORT, occurred_at=T0, session=None, data={"report": "daily"}
)
DAILY = Route("report:daily", "hook")

WRITES: list[tuple[str, Callable[[LeaderStore], Any]]] = [
    ("record", lambda s: s.record("s1", snap(), [event(id="x")], [], T0)),
    ("record_events", lambda s: s.record_events([event(id="x")], [], T0)),
    ("record_housekeeping", lambda s: s.record_housekeeping([PollMark("s1", T0, "ok", None)], {})),
    ("add_mute", lambda s: s.add_mute(Mute(MuteKind.SESSION, "s1", None), T0)),
    ("note_watched", lambda s: s.note_watched({"s1"}, T0)),
    ("due", lambda s: s.due("hook", T0, 10)),
    ("mark_delivered", lambda s: s.mark_delivered(1, T0, None)),
    ("record_report", lambda s: s.record_report("daily", T0, REPORT, [(REPORT, DAILY)], T0)),
]


@pytest.mark.parametrize(("name", "write"), WRITES, ids=[n for n, _ in WRITES])
def test_a_write_after_another_replica_took_the_lease_is_refused_and_counted(
    leader: LeaderStore, pg_url: str, name: str, write: Callable[[LeaderStore], Any]
) -> None:
    """The other replica's higher epoch fences every write of ours: FencedError, counted."""
    queue(leader, ("e1", "s1"))
    expire(pg_url)
    assert acquire(pg_url, "b:2:bbbb") == 2
    before = leader.counts()
    with pytest.raises(FencedError) as raised:
        write(leader)
    assert "epoch 1" in str(raised.value)
    assert "no longer holds the leader lease" in str(raised.value)
    assert leader.fenced_writes == 1
    assert leader.counts() == before
    assert leader.load_state("s1") is None  # nothing of a refused write is stored
    assert leader.report_runs() == {}


def test_an_expired_lease_or_no_epoch_refuses_writes(leader: LeaderStore, pg_url: str) -> None:
    """Not only a newer holder: a lease past its expiry, or no epoch set, refuses too."""
    leader.record("s1", snap(), [], [], T0)
    expire(pg_url)
    with pytest.raises(FencedError):
        leader.record("s1", snap(), [], [], T0)
    leader.set_epoch(None)
    with pytest.raises(FencedError, match="no epoch"):
        leader.record("s1", snap(), [], [], T0)
    assert leader.fenced_writes == 2


def test_the_delivery_store_shares_the_epoch_and_the_count(
    leader: LeaderStore, pg_url: str
) -> None:
    """Setting the epoch on one sets it for both; both count refusals in one figure."""
    delivery = leader.for_delivery()
    try:
        queue(leader, ("e1", "s1"))
        (row,) = delivery.due("hook", T0, 10)
        expire(pg_url)
        assert acquire(pg_url, "b:2:bbbb") == 2
        with pytest.raises(FencedError):
            delivery.mark_delivered(row.id, T0, None)
        assert leader.fenced_writes == 1
        leader.set_epoch(2)  # this replica holds epoch 2 now (say it was "b")
        delivery.mark_delivered(row.id, T0, None)
        assert leader.counts()[OutboxStatus.DELIVERED] == 1
    finally:
        delivery.close()


def test_an_unfenced_store_never_checks_the_lease(pg_url: str) -> None:
    """Commands (`mute`, `outbox retry`) write whoever leads, lease or none."""
    store = PostgresStore(pg_url)
    try:
        store.add_mute(Mute(MuteKind.SESSION, "s1", None), T0)
        assert store.fenced_writes == 0
    finally:
        store.close()


def claimed(url: str) -> dict[str, int | None]:
    """claimed_epoch of every outbox row, by event id."""
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT event_id, claimed_epoch FROM outbox").fetchall())


def test_due_claims_lane_heads_and_marks_clear_the_claim(leader: LeaderStore, pg_url: str) -> None:
    """Each lane's head only, stamped with the epoch; a mark releases it."""
    queue(leader, ("a1", "a"), ("a2", "a"), ("b1", "b"))
    rows = leader.due("hook", T0 + timedelta(minutes=1), 10)
    assert [r.event.id for r in rows if isinstance(r, OutboxRow)] == ["a1", "b1"]
    assert claimed(pg_url) == {"a1": 1, "a2": None, "b1": 1}
    by_event = {r.event.id: r.id for r in rows if isinstance(r, OutboxRow)}
    leader.mark_delivered(by_event["a1"], T0, None)
    leader.mark_retry(by_event["b1"], T0, "HTTP 503")
    assert claimed(pg_url) == {"a1": None, "a2": None, "b1": None}


def test_a_takeover_requeues_the_old_epochs_claims_and_counts_them(
    leader: LeaderStore, pg_url: str
) -> None:
    """Rows claimed by epoch 1 and not finished go back to pending claimless; finished stay."""
    queue(leader, ("a1", "a"), ("b1", "b"), ("c1", "c"))
    rows = leader.due("hook", T0 + timedelta(minutes=1), 10)
    leader.mark_delivered(rows[0].id, T0, None)
    expire(pg_url)
    new = PostgresStore(pg_url, fenced=True)
    try:
        epoch = acquire(pg_url, "b:2:bbbb")
        assert epoch == 2
        new.set_epoch(epoch)
        assert new.requeue_claimed(epoch) == 2
        assert claimed(pg_url) == {"a1": None, "b1": None, "c1": None}
        assert new.requeue_claimed(epoch) == 0
        again = new.due("hook", T0 + timedelta(minutes=1), 10)
        assert [r.event.id for r in again if isinstance(r, OutboxRow)] == ["b1", "c1"]
        assert claimed(pg_url) == {"a1": None, "b1": 2, "c1": 2}
    finally:
        new.close()


def test_a_locked_lane_head_skips_its_lane_and_never_hands_out_a_later_row(
    leader: LeaderStore, pg_url: str
) -> None:
    """While another transaction holds lane a's head, `due` gives lane b only, never a2."""
    queue(leader, ("a1", "a"), ("a2", "a"), ("b1", "b"))
    with psycopg.connect(pg_url) as other:
        other.execute("SELECT id FROM outbox WHERE event_id = 'a1' FOR UPDATE")
        rows = leader.due("hook", T0 + timedelta(minutes=1), 10)
        assert [r.event.id for r in rows if isinstance(r, OutboxRow)] == ["b1"]
        other.rollback()
    rows = leader.due("hook", T0 + timedelta(minutes=1), 10)
    assert [r.event.id for r in rows if isinstance(r, OutboxRow)] == ["a1", "b1"]


def test_a_fenced_transaction_holds_the_lease_row_so_a_takeover_waits_for_it(
    leader: LeaderStore, pg_url: str
) -> None:
    """While a fenced write is in flight, another replica cannot change the lease row."""
    leader.record("s1", snap(), [], [], T0)
    finished = threading.Event()
    with psycopg.connect(pg_url) as blocker:
        # Hold the session's row: the next record passes the fence, then waits here.
        blocker.execute("SELECT 1 FROM sessions WHERE session_id = 's1' FOR UPDATE")
        writer = threading.Thread(
            target=lambda: (leader.record("s1", snap(), [], [], T0), finished.set())
        )
        writer.start()
        with psycopg.connect(pg_url, autocommit=True) as other:
            wait_for_lock_wait(other)
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("UPDATE leader_lease SET expires_at = now()")
        blocker.rollback()
        writer.join()
    assert finished.is_set()


def wait_for_lock_wait(db: psycopg.Connection[Any]) -> None:
    """Until some backend of this database waits for a lock (the writer reached the row)."""
    for _ in range(500):
        row = db.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
        if row and row[0]:
            return
        db.execute("SELECT pg_sleep(0.01)")
    raise AssertionError("the writer never waited for the session row")
