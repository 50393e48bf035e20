"""The `rules` section, and the check that every template renders for what it can meet.

Each rule's events, targets, conditions, options and template are checked and
built into a `Rule`; then every template, on a target or a rule, must compile
and render a sample of each event type it can be given.

A rule's targets and quiet-hours window are checked against the names declared
in the file (valid or not), so one broken target is one problem, not one per
rule that uses it. Every problem goes to the builder's `ProblemLog`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from watcher.config.models import (
    ReportSection,
    RuleSection,
    RuleTemplateSection,
    SlackTemplateSection,
    WhenSection,
)
from watcher.config.problemlog import ProblemLog
from watcher.config.problems import unknown_name
from watcher.config.targets import slack_template
from watcher.config.yamlsafe import KeyPath
from watcher.core.lifecycle import CONDITION_EVENTS, EDGE_EVENTS, USAGE_COUNTERS
from watcher.core.model import EventType
from watcher.core.settings import MessageTemplate, Rule, Settings, Target, WebhookTemplate

# Made by the watcher itself, never by a session: no rule listens for them.
NOT_FOR_RULES = frozenset({EventType.DIGEST, EventType.REPORT})
CHECK_TIME_LIMIT = 2.0  # seconds `check` gives one template for all its sample events
_PART_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class SessionFilters(TypedDict):
    """The session filters a rule and a report share, as `Rule` and `ReportSpec` take them."""

    session_globs: tuple[str, ...]
    labels: Mapping[str, str]
    title_globs: tuple[str, ...]
    tags: tuple[str, ...]


def session_filters(section: WhenSection | ReportSection) -> SessionFilters:
    """The `session`, `labels`, `title` and `tags` filters of a rule's `when` or a report."""
    return SessionFilters(
        session_globs=section.session or (),
        labels=dict(section.labels),
        title_globs=section.title or (),
        tags=section.tags or (),
    )


class RuleBuilder:
    """Builds the rules and checks the templates, reporting every problem to `log`."""

    def __init__(self, log: ProblemLog) -> None:
        self.log = log
        self.rule_index: dict[str, int] = {}  # rule name -> its index in the file

    def rules(self, raw: Any, raw_targets: Any, raw_quiet: Any = None) -> tuple[Rule, ...]:
        at: KeyPath = ("rules",)
        # Names declared in the file, valid or not, so one broken target does not
        # also turn every rule that uses it into an "unknown target" problem.
        target_names = list(raw_targets) if isinstance(raw_targets, dict) else []
        out: list[Rule] = []
        for index, item, rule in self.log.named_items(RuleSection, raw, at, "rule"):
            here = (*at, index)
            self.rule_index.setdefault(rule.name, index)
            events = self.rule_events(rule, item, here)
            notify = self.targets(rule.notify, item, here, target_names)
            if events is None or notify is None:
                continue
            windows = list(raw_quiet) if isinstance(raw_quiet, dict) else []
            if not self.rule_options(rule, events, here, windows):
                continue
            template = self.rule_template(rule.template, (*here, "template"))
            out.append(
                Rule(
                    name=rule.name,
                    on=events,
                    notify=notify,
                    from_status=rule.when.from_ or (),
                    to_status=rule.when.to or (),
                    **session_filters(rule.when),
                    model_globs=rule.when.model or (),
                    settle=rule.settle,
                    hold_for=rule.for_,
                    cooldown=rule.cooldown,
                    repeat=rule.repeat,
                    resolved=rule.resolved,
                    urgent=rule.urgent,
                    threshold=dict(rule.threshold or {}),
                    quiet_hours=rule.quiet_hours,
                    template=template,
                    include_last_answer=rule.include_last_answer,
                )
            )
        return tuple(out)

    def rule_template(
        self, section: RuleTemplateSection | None, at: KeyPath
    ) -> MessageTemplate | None:
        """A rule's template: `body` (webhook targets) or `text`/`blocks` (Slack), not both."""
        if section is None:
            return None
        slack = section.text is not None or section.blocks is not None
        if section.body is not None and slack:
            self.log.report(
                at,
                "give either 'body' (for webhook targets) or 'text'/'blocks' (for Slack "
                "targets), not both; a rule notifying both kinds puts its templates on the targets",
            )
            return None
        if section.body is not None:
            return WebhookTemplate(section.body)
        if not slack:
            self.log.report(
                at, "expected 'text' and/or 'blocks' (Slack targets), or 'body' (webhooks)"
            )
            return None
        return slack_template(SlackTemplateSection(text=section.text, blocks=section.blocks))

    def rule_options(
        self, rule: RuleSection, events: tuple[str, ...], at: KeyPath, windows: list[str]
    ) -> bool:
        """Reject options that mean nothing for the rule's events, with what they apply to."""
        ok = True
        kinds = set(events)

        def only(key: str, given: object, allowed: frozenset[EventType]) -> None:
            nonlocal ok
            if given is None or given is False:
                return
            wrong = sorted(kinds - allowed)
            if wrong:
                names = ", ".join(sorted(allowed))
                self.log.report(
                    (*at, key),
                    f"'{key}' means nothing for {', '.join(wrong)}; it applies only to {names}",
                )
                ok = False

        only("for", rule.for_, CONDITION_EVENTS)
        only("repeat", rule.repeat, CONDITION_EVENTS)
        only("resolved", rule.resolved, CONDITION_EVENTS)
        only("threshold", rule.threshold, frozenset({EventType.USAGE_CROSSED}))
        only("settle", rule.settle, EDGE_EVENTS)
        session_events = frozenset(e for e in EventType if e.startswith("session."))
        only("cooldown", rule.cooldown, session_events)
        only("quiet_hours", rule.quiet_hours, session_events)
        only("include_last_answer", rule.include_last_answer, session_events)
        if kinds & CONDITION_EVENTS and rule.for_ is None:
            which = ", ".join(sorted(kinds & CONDITION_EVENTS))
            self.log.report((*at, "on"), f"{which} needs 'for': how long the condition must hold")
            ok = False
        if EventType.USAGE_CROSSED in kinds and not rule.threshold:
            self.log.report(
                (*at, "on"),
                f"{EventType.USAGE_CROSSED} needs 'threshold', e.g. {{factory_credits: 100}}",
            )
            ok = False
        for counter in rule.threshold or {}:
            if counter not in USAGE_COUNTERS:
                self.log.report(
                    (*at, "threshold", counter),
                    unknown_name("usage counter", counter, USAGE_COUNTERS),
                )
                ok = False
        if rule.quiet_hours is not None and rule.quiet_hours not in windows:
            self.log.report(
                (*at, "quiet_hours"), unknown_name("quiet-hours window", rule.quiet_hours, windows)
            )
            ok = False
        return ok

    def rule_events(self, rule: RuleSection, raw: Any, at: KeyPath) -> tuple[str, ...] | None:
        known = [str(e) for e in EventType if e not in NOT_FOR_RULES]
        events: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "on"), rule.on):
            if value not in known:
                # Event types share long prefixes: only a near miss is a typo.
                self.log.report(where, unknown_name("event type", value, known, cutoff=0.85))
                ok = False
            elif value in events:
                self.log.report(where, f"event type '{value}' is listed twice")
                ok = False
            else:
                events.append(EventType(value))
        if EventType.STATUS_CHANGED not in events:
            for key, given in (("from", rule.when.from_), ("to", rule.when.to)):
                if given is not None:
                    self.log.report(
                        (*at, "when", key),
                        f"'{key}' applies only to {EventType.STATUS_CHANGED} events; "
                        f"add that to 'on' or remove '{key}'",
                    )
                    ok = False
        return tuple(events) if ok else None

    def targets(
        self, values: tuple[str, ...], raw: Any, at: KeyPath, target_names: list[str]
    ) -> tuple[str, ...] | None:
        """The `notify` targets of the rule or report `raw`, or None if one is unknown or twice."""
        notify: list[str] = []
        ok = True
        for where, value in _items(raw, (*at, "notify"), values):
            if value not in target_names:
                self.log.report(where, unknown_name("target", value, target_names))
                ok = False
            elif value in notify:
                self.log.report(where, f"target '{value}' is listed twice")
                ok = False
            else:
                notify.append(value)
        return tuple(notify) if ok else None

    def check_templates(self, settings: Settings) -> None:
        """Every template compiles and renders a sample of every event type it can meet."""
        if not any(t.template for t in settings.targets.values()) and not any(
            r.template for r in settings.rules
        ):
            return
        every = [kind for kind in EventType if kind not in NOT_FOR_RULES]
        for name, target in settings.targets.items():
            if target.template is not None:
                self.check_template(("targets", name, "template"), target.template, every)
        for rule in settings.rules:
            if rule.template is None:
                continue
            at: KeyPath = ("rules", self.rule_index.get(rule.name, 0), "template")
            advice = "split the rule, or give each target its own template"
            targets = settings.targets
            if self.template_suits(at, rule.template, rule.notify, targets, "rule", advice):
                kinds = [EventType(kind) for kind in rule.on]
                self.check_template(at, rule.template, kinds, rule)

    def template_suits(
        self,
        at: KeyPath,
        template: MessageTemplate,
        notify: tuple[str, ...],
        targets: Mapping[str, Target],
        what: str,
        advice: str,
    ) -> bool:
        """Whether `template` suits every target notified; if not, one problem naming those."""
        # Imported here: Jinja2 loads only for a config that has templates.
        from watcher.core.template import suits  # noqa: PLC0415

        wrong = [
            targets[n] for n in notify if n in targets and not suits(template, targets[n].kind)
        ]
        if not wrong:
            return True
        given = (
            "'body' is for webhook"
            if isinstance(template, WebhookTemplate)
            else "'text'/'blocks' are for Slack"
        )
        names = ", ".join(f"'{t.name}' ({t.kind})" for t in wrong)
        self.log.report(
            at,
            f"this template does not suit every target the {what} notifies: {given} "
            f"targets, not {names}; {advice}",
        )
        return False

    def check_template(
        self,
        at: KeyPath,
        template: MessageTemplate,
        kinds: Iterable[EventType],
        rule: Rule | None = None,
    ) -> None:
        """`template` renders a sample of each of `kinds` in time; each problem at its line."""
        # Imported here: Jinja2 loads only for a config that has templates.
        from watcher.core.sandbox import within  # noqa: PLC0415
        from watcher.core.template import check_template  # noqa: PLC0415

        limits = within(CHECK_TIME_LIMIT, time.monotonic)
        for problem in check_template(template, kinds, rule, limits):
            self.report_template(at, problem.part, problem.line, problem.message)

    def report_template(self, at: KeyPath, part: str, line: int | None, message: str) -> None:
        """A template problem at the file line of the template's own `line` in `part`."""
        path = (*at, *_part_path(part))
        start = self.log.document.text_lines.get(path)
        where = (
            start + line - 1
            if start is not None and line is not None
            else self.log.document.line_of(path)
        )
        self.log.report_on_line(path, where, message)


def _part_path(part: str) -> KeyPath:
    """`blocks[0].text.text` -> ("blocks", 0, "text", "text")."""
    head = part.split(".", 1)[0].split("[", 1)[0]
    path: list[str | int] = [head]
    for match in _PART_STEP.finditer(part, len(head)):
        path.append(match[1] if match[1] is not None else int(match[2]))
    return tuple(path)


def _items(raw: Any, at: KeyPath, values: tuple[str, ...]) -> list[tuple[KeyPath, str]]:
    """Pair each value of a one-or-many field with its key path (`on` or `on[1]`)."""
    given = raw.get(at[-1]) if isinstance(raw, dict) else None
    if isinstance(given, list):
        return [((*at, i), value) for i, value in enumerate(values)]
    return [(at, value) for value in values]
