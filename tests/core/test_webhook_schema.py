"""Webhook events v1: every body the renderer makes follows docs/webhook-event.schema.json."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.factories import T0, event, ref
from tests.core.reportsim import END, History
from tests.webhook_schema import schema_problems
from watcher.core.model import Event, EventType
from watcher.core.render import render_webhook
from watcher.core.report import report_event
from watcher.core.rulestate import digest_event
from watcher.core.samples import sample_event, sample_events, with_answer
from watcher.core.settings import ReportSpec, WebhookTemplate
from watcher.core.template import render_webhook_template

# Data as the producers make it (diff, lifecycle, rulestate, health).
DATA: dict[EventType, dict[str, Any]] = {
    EventType.DISCOVERED: {},
    EventType.STATUS_CHANGED: {"from": "pending", "to": "running"},
    EventType.COMPLETED: {"completed_at": "2026-11-28T12:00:00+00:00", "duration_s": 61.5},
    EventType.MESSAGES_ADDED: {"added": 2, "total": 9},
    EventType.ARCHIVED: {"archived_at": "2026-11-28T12:00:00Z"},
    EventType.DELETED: {},
    EventType.STARTED: {},
    EventType.FINISHED: {
        "completed_at": "2026-11-28T12:00:00+00:00",
        "duration_s": 600.0,
        "between_polls": False,
    },
    EventType.INTERRUPTED: {},
    EventType.WAITING: {"since": "2026-11-28T11:45:00+00:00", "for_s": 900.0},
    EventType.STUCK: {"since": "2026-11-28T11:45:00+00:00", "for_s": 900.0, "reminder": 2},
    EventType.LONG_RUNNING: {"resolved": True, "since": "x", "lasted_s": 7200.0},
    EventType.USAGE_CROSSED: {"counter": "factory_credits", "threshold": 100, "value": 101.5},
}
SESSIONLESS: dict[EventType, dict[str, Any]] = {
    EventType.API_UNAVAILABLE: {"since": "x", "reason": "HTTP 503", "auth": False},
    EventType.API_RECOVERED: {"down_since": "x", "down_for_s": 30.0},
}


def body_of(the_event: Event, rule: str = "r") -> Any:
    """The parsed webhook body of `the_event`."""
    return json.loads(render_webhook(the_event, rule).body)


def test_every_catalog_type_is_in_the_table() -> None:
    """The table below covers every event type the watcher emits."""
    assert set(DATA) | set(SESSIONLESS) | {EventType.DIGEST, EventType.REPORT} == set(EventType)


@pytest.mark.parametrize("kind", list(DATA))
def test_session_event_bodies_validate(kind: EventType) -> None:
    """The body of each session event type follows the published schema."""
    body = body_of(event(kind, data=DATA[kind], sequence=7))
    assert schema_problems(body) == []
    assert (body["version"], body["sequence"]) == (1, 7)


@pytest.mark.parametrize("kind", list(SESSIONLESS))
def test_watcher_event_bodies_validate(kind: EventType) -> None:
    """The watcher's own events have no session and still follow the schema."""
    the_event = event(kind, session=None, data=SESSIONLESS[kind], sequence=1)
    assert schema_problems(body_of(the_event)) == []


def test_digest_bodies_validate() -> None:
    """A digest body, with the events it lists, follows the schema."""
    held = [
        (event(kind, id=f"evt_{n}", data=DATA[kind], sequence=n + 1), "r")
        for n, kind in enumerate(DATA)
    ]
    digest = replace(digest_event("t", "night", T0 + timedelta(hours=8), held), sequence=3)
    body = body_of(digest, "quiet_hours:night")
    assert schema_problems(body) == []
    assert len(body["events"]) == len(DATA)


def _report_bodies() -> list[Any]:
    """Report bodies: the samples, and reports of a simulated day (grouped, filtered, empty)."""
    events = [replace(e, sequence=4) for e in sample_events(EventType.REPORT)]
    h = History()
    h.labels = {"a": {"team": "platform"}}
    for n, sid in enumerate("abcdefg"):
        h.poll(30, sid, "idle", created=0, credits=1, assistant_active_ms=1000)
        h.poll(100 + n, sid, "running")
        h.poll(200 + n, sid, "idle", completed=199 + n, credits=5 + n, assistant_active_ms=9000)
    h.poll(300, "a", "pending")
    h.poll(300, "b", "running")
    h.gone(400, "c")
    h.poll(400, "d", archived_at="2026-12-01T06:00:00Z")
    for spec in (
        ReportSpec("daily", "0 9 * * *", "Europe/Berlin", group_by="team"),
        ReportSpec("web", "0 9 * * *", labels={"team": "web"}),
    ):
        events.append(replace(report_event(spec, h.report(spec), END), sequence=5))
    return [body_of(e, "report:daily") for e in events]


def test_report_bodies_validate() -> None:
    """A report's body (type `report`, data the document) follows the schema."""
    bodies = _report_bodies()
    assert {b["data"]["empty"] for b in bodies} == {True, False}
    for body in bodies:
        assert body["type"] == "report"
        assert body["session"] is None
        assert schema_problems(body) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b["data"].pop("counts"),
        lambda b: b["data"]["counts"].update(finished=-1),
        lambda b: b["data"]["sessions"]["finished"].append({"id": "x"}),
        lambda b: b["data"]["longest_runs"].append({"session": None}),
        lambda b: b["data"]["window"].update(start="yesterday"),
        lambda b: b.update(session={"id": "s1"}),
    ],
)
def test_the_schema_refuses_broken_report_bodies(change: Any) -> None:
    """A report body missing what the document promises is refused."""
    body = _report_bodies()[0]
    change(body)
    assert schema_problems(body)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda b: b.pop("sequence"), "(body)"),
        (lambda b: b.update(sequence=0), "sequence"),
        (lambda b: b.update(version=2), "version"),
        (lambda b: b["data"].pop("to"), "data"),
        (lambda b: b.update(occurred_at="2026-11-28 12:00"), "occurred_at"),
        (lambda b: b.update(session=None), "session"),
    ],
)
def test_the_schema_refuses_broken_bodies(change: Any, where: str) -> None:
    """The schema is strict enough to catch a body that breaks the contract."""
    body = body_of(event(sequence=1))
    change(body)
    problems = schema_problems(body)
    assert problems, f"schema accepted a body with a broken {where}"


texts = st.text(st.characters(codec="utf-8"), max_size=40)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(list(DATA)),
    title=texts,
    name=st.none() | texts,
    labels=st.dictionaries(texts, texts, max_size=3),
    extra=st.dictionaries(texts, json_leaf, max_size=4),
    sequence=st.integers(min_value=1, max_value=2**53),
)
def test_any_title_labels_or_extra_data_keep_bodies_valid(
    kind: EventType,
    title: str,
    name: str | None,
    labels: dict[str, str],
    extra: dict[str, Any],
    sequence: int,
) -> None:
    """Whatever text a session carries, and whatever data is added, the body stays valid."""
    data = {**extra, **DATA[kind]}
    session = ref(title=title, name=name, labels=labels)
    the_event = event(kind, session=session, data=data, sequence=sequence)
    assert schema_problems(body_of(the_event)) == []


@pytest.mark.parametrize("kind", [k for k in EventType if k is not EventType.DIGEST])
def test_the_sample_events_of_templates_make_valid_bodies(kind: EventType) -> None:
    """The samples `check` and `render` use look like real events to the schema too."""
    for sample in sample_events(kind):
        assert schema_problems(body_of(with_answer(sample))) == []


def test_a_templated_body_validates_as_such() -> None:
    """A template's own shape passes as a templated body; without the mark it would not."""
    template = WebhookTemplate('{"text": {{ session.title }}}')
    sample = sample_event(EventType.FINISHED)
    body = json.loads(render_webhook_template(template, sample, "r").body)
    assert schema_problems(body) == []
    del body["template"]
    assert schema_problems(body) != []


def test_session_facts_and_the_run_summary_travel_in_the_body() -> None:
    """Counters at the event and what the run took reach receivers, in the schema's terms."""
    body = body_of(sample_event(EventType.FINISHED))
    assert schema_problems(body) == []
    session, run = body["session"], body["data"]["run"]
    assert (session["message_count"], session["active_s"]) == (42, 1020.0)
    assert session["usage"]["factory_credits"] == 104.5
    assert (run["messages_added"], run["credits"], run["tokens"]["output"]) == (12, 44.5, 28000)
    run["active_share"] = 2
    assert schema_problems(body) != []
