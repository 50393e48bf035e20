"""Matching events against rules: which targets hear about an event, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watcher.core.model import Event
from watcher.core.settings import Rule


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one rule matched one event, with the reason in words."""

    rule: Rule
    matched: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Route:
    """An event to deliver to one target, on behalf of one rule."""

    rule: str
    target: str


def _any_glob(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(value, pattern) for pattern in patterns)


def judge(rule: Rule, event: Event) -> Verdict:
    """Decide whether `rule` matches `event`; the reason names the first failed condition."""
    if str(event.type) not in rule.on:
        return Verdict(rule, False, f"event {event.type} is not in on={list(rule.on)}")
    if rule.from_status and not _any_glob(str(event.data.get("from", "")), rule.from_status):
        return Verdict(
            rule, False, f"from={event.data.get('from')!r} not in {list(rule.from_status)}"
        )
    if rule.to_status and not _any_glob(str(event.data.get("to", "")), rule.to_status):
        return Verdict(rule, False, f"to={event.data.get('to')!r} not in {list(rule.to_status)}")
    session = event.session
    if rule.session_globs or rule.labels:
        if session is None:
            return Verdict(rule, False, "event concerns no session")
        names = [session.id] + ([session.name] if session.name else [])
        if rule.session_globs and not any(_any_glob(n, rule.session_globs) for n in names):
            return Verdict(
                rule, False, f"session {session.id!r} matches none of {list(rule.session_globs)}"
            )
        for key, wanted in rule.labels.items():
            if session.labels.get(key) != wanted:
                return Verdict(
                    rule, False, f"label {key}={session.labels.get(key)!r}, wanted {wanted!r}"
                )
    return Verdict(rule, True, "all conditions hold")


def route(rules: Iterable[Rule], event: Event) -> tuple[Route, ...]:
    """Targets that must hear about `event`: one route per target, first matching rule wins."""
    routes: dict[str, Route] = {}
    for rule in rules:
        if judge(rule, event).matched:
            for target in rule.notify:
                routes.setdefault(target, Route(rule.name, target))
    return tuple(routes.values())
