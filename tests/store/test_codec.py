"""The store's JSON codecs: events, session states and rule memory round-trip."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.core.factories import T0, event, ref, snap
from watcher.core.lifecycle import Track
from watcher.core.model import EventType, Gone, TokenUsage
from watcher.core.rulestate import Episode, RuleMemory, SessionMemory, Settling
from watcher.store import (
    event_from_json,
    event_to_json,
    memory_from_json,
    memory_to_json,
    state_from_json,
    state_to_json,
)

M = timedelta(minutes=1)


def test_memory_survives_serialisation() -> None:
    """Track, settling events, episodes, crossed thresholds and the last send round-trip."""
    finished = event(EventType.FINISHED, id="evt_f", data={"between_polls": False})
    memory = SessionMemory(
        Track("idle", T0, T0 - M, 4, T0),
        {
            "done": RuleMemory(
                settling=(Settling(finished, 4, T0 + M),),
                episodes={"session.stuck": Episode(T0 - 20 * M, 2)},
                crossed=frozenset({"factory_credits>=100"}),
                last_sent=T0 - M,
            )
        },
    )
    assert memory_from_json(memory_to_json(memory)) == memory
    assert memory_from_json(memory_to_json(SessionMemory())) == SessionMemory()


def test_states_round_trip() -> None:
    """A snapshot, a gone session with its last snapshot and one never seen alive."""
    for state in (snap(), Gone("s1", snap()), Gone("s1", None)):
        assert state_from_json("s1", state_to_json(state)) == state


def test_session_facts_round_trip_and_old_rows_lack_them() -> None:
    """A session ref keeps its card facts; an event stored before them loads with None."""
    full = ref(
        created_at=T0 - timedelta(hours=1),
        message_count=7,
        active_ms=1234.5,
        usage=TokenUsage(1, 2, 3, 4, 5, 0.75),
        model="m",
    )
    stored = event(session=full)
    assert event_from_json(event_to_json(stored)) == stored
    old = json.loads(event_to_json(event()))
    for key in ("created_at", "message_count", "active_ms", "usage"):
        old["session"].pop(key, None)
    loaded = event_from_json(json.dumps(old))
    assert loaded.session is not None
    assert (loaded.session.created_at, loaded.session.usage, loaded.session.credits) == (
        None,
        None,
        None,
    )


def test_the_sequence_comes_from_the_caller() -> None:
    """The stored document has no sequence; the events table's column gives it (None: 0)."""
    assert event_from_json(event_to_json(event(sequence=5)), 7).sequence == 7
    assert event_from_json(event_to_json(event()), None).sequence == 0
