"""Events read back from captured webhook bodies."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from watcher.core.captured import EventBodyError, event_from_body
from watcher.core.model import EventType
from watcher.core.render import render_slack, render_webhook
from watcher.core.rulestate import digest_event
from watcher.core.samples import SAMPLE_NOW, sample_event


def test_a_built_in_body_reads_back_as_the_same_event() -> None:
    """What render_webhook writes, event_from_body reads: type, id, time, session, data."""
    event = sample_event(EventType.FINISHED)
    body = json.loads(render_webhook(event, "r").body)
    body["version"], body["sequence"] = 1, 9
    back = event_from_body(body)
    assert (back.type, back.id, back.occurred_at, back.data) == (
        event.type,
        event.id,
        event.occurred_at,
        event.data,
    )
    assert back.session is not None
    assert event.session is not None
    assert (back.session.id, back.session.title, back.session.labels) == (
        event.session.id,
        event.session.title,
        event.session.labels,
    )
    assert back.sequence == 9


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], "expected a JSON object"),
        ({}, "type: expected an event type"),
        ({"type": "session.nope"}, "type: unknown event type 'session.nope'"),
        ({"type": "session.started", "version": 2}, "version: expected one of 1"),
        (
            {"type": "session.started", "occurred_at": "yesterday"},
            "occurred_at: expected an ISO 8601",
        ),
        (
            {"type": "session.started", "session": {"title": "x"}},
            "session.id: expected a non-empty",
        ),
        ({"type": "session.started", "session": {"id": "s", "labels": [1]}}, "session.labels"),
        ({"type": "session.started", "data": [1]}, "data: expected an object"),
        ({"type": "session.started", "sequence": -1}, "sequence: expected a whole number"),
        ({"type": "session.started", "session": {"id": 5}}, "session.id: expected a string"),
    ],
)
def test_a_body_that_is_not_an_event_names_what_is_wrong(body: Any, expected: str) -> None:
    """Each malformed key is named with what was expected."""
    with pytest.raises(EventBodyError, match=expected):
        event_from_body(body)


@pytest.mark.parametrize("kind", [k for k in EventType if k is not EventType.DIGEST])
def test_every_body_reads_back_whole_with_the_sessions_counters(kind: EventType) -> None:
    """Every type round-trips, session counters included, so a replayed card shows them."""
    event = sample_event(kind)
    back = event_from_body(json.loads(render_webhook(event, "r").body))
    if event.session is not None:
        event = replace(event, session=replace(event.session, tags=()))  # bodies carry no tags
    assert back == event


def test_a_digest_body_reads_back_as_the_digest_it_was() -> None:
    """A `type: digest` body becomes the digest event again; its Slack rendering is the same."""
    held = [(sample_event(EventType.FINISHED), "done"), (sample_event(EventType.STUCK), "stuck")]
    digest = replace(digest_event("t", "night", SAMPLE_NOW, held), sequence=3)
    body = json.loads(render_webhook(digest, "quiet_hours:night").body)
    back = event_from_body(body)
    assert back.type is EventType.DIGEST
    assert render_slack(back, "r") == render_slack(digest, "r")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"events": None}, "events: expected the list"),
        ({"events": [{"type": "nope"}]}, "events[0].type: unknown event type"),
        ({"events": ["x"]}, "events[0]: expected an event object"),
    ],
)
def test_a_broken_digest_body_names_what_is_wrong(change: dict[str, Any], message: str) -> None:
    """A digest whose events are missing or broken is refused with the key at fault."""
    digest = digest_event("t", "night", SAMPLE_NOW, [(sample_event(EventType.FINISHED), "d")])
    body = {**json.loads(render_webhook(digest, "r").body), **change}
    with pytest.raises(EventBodyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        event_from_body(body)


@pytest.mark.parametrize(
    ("session", "message"),
    [
        ({"message_count": -1}, "session.message_count: expected a whole number"),
        ({"active_s": "x"}, "session.active_s: expected a number"),
        ({"usage": []}, "session.usage: expected an object"),
        ({"usage": {"factory_credits": "1"}}, "session.usage.factory_credits"),
        ({"created_at": "yesterday"}, "session.created_at: expected an ISO 8601 time"),
    ],
)
def test_broken_session_counters_name_the_key(session: dict[str, Any], message: str) -> None:
    """A counter of the wrong kind is refused with its key, not read as something else."""
    body = json.loads(render_webhook(sample_event(EventType.FINISHED), "r").body)
    body["session"].update(session)
    with pytest.raises(EventBodyError, match=message):
        event_from_body(body)
