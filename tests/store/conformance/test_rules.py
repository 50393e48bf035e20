"""Conformance: the rules' state (memory, held digests, mutes, decisions), committed with polls."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.core.factories import T0, event, ref, snap
from tests.store.backends import Backend
from watcher.core.lifecycle import Track
from watcher.core.model import EventType
from watcher.core.rules import Route
from watcher.core.rulestate import (
    Decision,
    Episode,
    Evaluation,
    Held,
    Mute,
    MuteKind,
    Observation,
    Outcome,
    RuleMemory,
    SessionMemory,
    Settling,
    evaluate,
)
from watcher.core.settings import Rule
from watcher.store import OutboxStatus, Store

M = timedelta(minutes=1)
S = timedelta(seconds=1)

FINISHED = event(EventType.FINISHED, id="evt_f", data={"between_polls": False})
MEMORY = SessionMemory(
    Track("idle", T0, T0 - M, 4, T0),
    {
        "done": RuleMemory(
            settling=(Settling(FINISHED, 4, T0 + M),),
            episodes={"session.stuck": Episode(T0 - 20 * M, 2)},
            crossed=frozenset({"factory_credits>=100"}),
            last_sent=T0 - M,
        )
    },
)


def test_a_poll_commits_its_state_events_routes_memory_and_held_together(store: Store) -> None:
    """One record call stores all of it; wake_at makes the session due for the timer."""
    held = event(EventType.STARTED, id="evt_s", data={})
    evaluation = Evaluation(
        memory=MEMORY,
        decisions=(
            Decision("done", FINISHED, Outcome.SETTLING, "settling"),
            Decision("begin", held, Outcome.HELD, "quiet", ("t",), T0 + 60 * M),
        ),
        held=(Held("t", "night", T0 + 60 * M, held, "begin"),),
        wake_at=T0 + M,
    )
    assert store.next_wake() is None
    store.record("s1", snap(), [FINISHED, held], [], T0, evaluation=evaluation)
    assert store.load_memory("s1") == MEMORY
    assert store.due_sessions(T0) == []
    assert store.due_sessions(T0 + M) == ["s1"]
    assert store.next_wake() == T0 + M
    assert store.held_count() == 1
    assert store.due_held(T0 + 59 * M) == []
    [row] = store.due_held(T0 + 60 * M)
    assert (row.held.target, row.held.window, row.held.event.id) == ("t", "night", "evt_s")
    assert [d.outcome for d in store.recent_decisions("s1")] == [Outcome.SETTLING, Outcome.HELD]
    assert [e.id for e in store.recent_events("s1")] == ["evt_f", "evt_s"]
    digest = event(EventType.DIGEST, id="evt_d", session=None, data={})
    assert store.release_digests([(digest, Route("quiet_hours:night", "t"))], [row.id], T0) == 1
    assert store.held_count() == 0
    assert store.counts()[OutboxStatus.PENDING] == 1


def test_a_timer_evaluation_commits_its_events_routes_and_memory(store: Store) -> None:
    """`record_evaluation` stores the decided events, queues their routes, keeps the memory."""
    fired = event(EventType.STUCK, id="evt_stuck", data={})
    evaluation = Evaluation(
        memory=MEMORY,
        decisions=(Decision("stuck", fired, Outcome.SENT, "held for 5m", ("t",)),),
        routes=((fired, Route("stuck", "t")),),
    )
    assert store.record_evaluation("s1", evaluation, T0) == 1
    assert store.load_memory("s1") == MEMORY
    assert store.due_sessions(T0 + 1000 * M) == []  # no wake_at: not due
    (row,) = store.due("t", T0, 10)
    assert (row.event_type, row.attempts) == ("session.stuck", 0)
    assert [e.id for e in store.recent_events("s1")] == ["evt_stuck"]


def test_an_unreadable_held_notification_becomes_a_dead_letter(
    store: Store, backend: Backend
) -> None:
    """A held event that cannot be read back is not listed; it is kept as a dead letter."""
    good = event(EventType.STARTED, id="evt_good", data={}, sequence=0)
    bad = event(EventType.STARTED, id="evt_bad", data={}, sequence=0)
    evaluation = Evaluation(
        memory=SessionMemory(),
        held=(Held("t", "night", T0, bad, "begin"), Held("t", "night", T0, good, "begin")),
    )
    store.record("s1", snap(), [bad, good], [], T0, evaluation=evaluation)
    backend.overwrite_event_body("evt_bad", "{")
    [row] = store.due_held(T0)
    assert (row.held.event.id, row.held.event.sequence) == ("evt_good", 2)
    [dead] = store.list_outbox(OutboxStatus.DEAD)
    assert (dead.target, dead.rule, dead.event_type) == ("t", "begin", "session.started")
    assert "stored event cannot be read" in (dead.last_error or "")
    assert [r.held.event.id for r in store.due_held(T0)] == ["evt_good"]  # no second burial


def test_mutes_are_listed_while_in_force_and_removed_by_kind(store: Store) -> None:
    """An expired mute is not in force; unmute removes only the named kind and value."""
    first = store.add_mute(Mute(MuteKind.SESSION, "s1", T0 + M, "deploy"), T0)
    second = store.add_mute(Mute(MuteKind.RULE, "s1"), T0)
    assert first != second
    assert [(m.kind, m.reason, m.id) for m in store.active_mutes(T0)] == [
        (MuteKind.SESSION, "deploy", first),
        (MuteKind.RULE, "", second),
    ]
    assert [m.kind for m in store.active_mutes(T0 + M)] == [MuteKind.RULE]
    assert store.remove_mutes(MuteKind.SESSION, "s1") == 1
    assert store.remove_mutes(MuteKind.SESSION, "s1") == 0
    assert [m.kind for m in store.active_mutes(T0)] == [MuteKind.RULE]


def test_decisions_are_capped_per_session(store: Store) -> None:
    """Only the latest decisions of a session are kept, so the log cannot grow without end."""
    for n in range(260):
        decision = Decision("r", event(id=f"e{n}", session=ref()), Outcome.UNMATCHED, f"n{n}")
        store.record_evaluation(
            "s1", Evaluation(SessionMemory(), decisions=(decision,)), T0 + n * M
        )
    kept = store.recent_decisions("s1", limit=1000)
    assert len(kept) == 200
    assert kept[-1].reason == "n259"
    assert kept[-1].at == T0 + 259 * M
    assert [d.reason for d in store.recent_decisions("s1", limit=2)] == ["n258", "n259"]


@pytest.mark.parametrize(
    "text",
    [
        '{"x": 1}',
        "{broken",
        '{"rules": [], "track": null}',
        '{"rules": {}, "track": 5}',
        '{"rules": {"r": {"settling": [], "episodes": {"k": {"since": 1e30, "fired": 1}},'
        ' "crossed": [], "last_sent": null}}, "track": null}',
    ],
)
def test_unreadable_memory_starts_afresh(
    store: Store, backend: Backend, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    """A corrupt rule-memory row reads as empty memory, with a warning, instead of failing polls."""
    backend.overwrite_memory("s1", text)
    assert store.load_memory("s1") == SessionMemory()
    assert "rule memory of s1 is unreadable" in caplog.text


def test_memory_from_an_evaluation_compares_equal_after_the_store(store: Store) -> None:
    """Times are kept in whole milliseconds, so an unchanged poll finds nothing to write."""
    rules = [
        Rule("stuck", ("session.stuck",), ("t",), hold_for=5 * M, repeat=M),
        Rule("stopped", ("session.interrupted",), ("t",), settle=timedelta(seconds=30)),
    ]
    running = snap(status="running")
    now = T0 + timedelta(microseconds=123_456)
    first = evaluate(rules, {}, [], SessionMemory(), ref(), now, Observation(None, running))
    idle = snap(status="idle", updated_at=T0 + M)
    now += timedelta(seconds=7, microseconds=777)
    second = evaluate(rules, {}, [], first.memory, ref(), now, Observation(running, idle))
    store.record("s1", idle, [], [], now, evaluation=second)
    loaded = store.load_memory("s1")
    assert loaded == second.memory
    again = evaluate(rules, {}, [], loaded, ref(), now + 10 * S, Observation(idle, idle))
    assert again.memory == loaded
    assert again.decisions == ()
