"""Matching events against rules: which targets hear about an event, and why."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from watcher.core.model import Event, SessionRef
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
    return judge_session(rule, event.session)


def judge_session(rule: Rule, session: SessionRef | None) -> Verdict:
    """Decide whether the session conditions of `rule` (`when:` but from/to) hold for `session`."""
    if rule.title_globs or rule.tags or rule.model_globs:
        if session is None:
            return Verdict(rule, False, "event concerns no session")
        if rule.title_globs and not _any_glob(session.title, rule.title_globs):
            return Verdict(
                rule, False, f"title {session.title!r} matches none of {list(rule.title_globs)}"
            )
        if rule.tags and not set(rule.tags) & set(session.tags):
            return Verdict(
                rule, False, f"tags {list(session.tags)} include none of {list(rule.tags)}"
            )
        if rule.model_globs and not _any_glob(session.model or "", rule.model_globs):
            return Verdict(
                rule, False, f"model {session.model!r} matches none of {list(rule.model_globs)}"
            )
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
