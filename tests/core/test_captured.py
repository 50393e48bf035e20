"""Events read back from captured webhook bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from watcher.core.captured import EventBodyError, event_from_body
from watcher.core.model import EventType
from watcher.core.render import render_webhook
from watcher.core.samples import sample_event


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
