"""Matching events against rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.factories import event, ref
from watcher.core.model import EventType
from watcher.core.rules import Route, judge, route
from watcher.core.settings import Rule


def rule(**changes: Any) -> Rule:
    """A rule on status changes to one target, with `changes`."""
    fields: dict[str, Any] = {"name": "r", "on": ("session.status_changed",), "notify": ("slack",)}
    fields.update(changes)
    return Rule(**fields)


MATCH_CASES = [
    ("type matches", rule(), event(), True, "all conditions hold"),
    ("type differs", rule(on=("session.archived",)), event(), False, "is not in on="),
    ("from and to match", rule(from_status=("running",), to_status=("idle",)), event(), True, ""),
    ("to glob", rule(to_status=("id*",)), event(), True, ""),
    ("from differs", rule(from_status=("pending",)), event(), False, "from='running'"),
    ("to differs", rule(to_status=("running",)), event(), False, "to='idle'"),
    ("session id glob", rule(session_globs=("s*",)), event(), True, ""),
    ("session name glob", rule(session_globs=("night*",)), event(), True, ""),
    ("session glob misses", rule(session_globs=("x*", "y")), event(), False, "matches none"),
    ("label matches", rule(labels={"team": "platform"}), event(), True, ""),
    ("label differs", rule(labels={"team": "web"}), event(), False, "label team='platform'"),
    ("label missing", rule(labels={"env": "prod"}), event(), False, "label env=None"),
    (
        "unnamed session",
        rule(session_globs=("night*",)),
        event(session=ref(name=None)),
        False,
        "matches none",
    ),
    (
        "watcher event vs session condition",
        rule(on=("watcher.api_unavailable",), labels={"team": "platform"}),
        event(EventType.API_UNAVAILABLE, session=None),
        False,
        "concerns no session",
    ),
    (
        "watcher event, no session condition",
        rule(on=("watcher.api_unavailable",)),
        event(EventType.API_UNAVAILABLE, session=None),
        True,
        "",
    ),
]


@pytest.mark.parametrize(
    ("name", "the_rule", "the_event", "matched", "reason"),
    MATCH_CASES,
    ids=[c[0] for c in MATCH_CASES],
)
def test_judge(name: str, the_rule: Rule, the_event: Any, matched: bool, reason: str) -> None:
    """Each condition is checked, and a miss names the condition that failed."""
    verdict = judge(the_rule, the_event)
    assert verdict.matched is matched
    assert reason in verdict.reason


def test_route_one_per_target_first_rule_wins() -> None:
    """Two rules naming one target send one notification, attributed to the first rule."""
    rules = [
        rule(name="a", notify=("slack", "hook")),
        rule(name="b", notify=("slack", "ops")),
        rule(name="c", on=("session.archived",), notify=("pager",)),
    ]
    assert route(rules, event()) == (Route("a", "slack"), Route("a", "hook"), Route("b", "ops"))


def test_route_nothing_matches() -> None:
    """An event no rule wants goes nowhere."""
    assert route([rule(on=("session.deleted",))], event()) == ()
