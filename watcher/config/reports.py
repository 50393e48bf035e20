"""The `reports` section: scheduled reports, each checked and built into a `ReportSpec`.

A report's name is unique; its `schedule` is a cron expression and its
`timezone` an IANA zone (both checked by `watcher.config.cron`, with the
field that is wrong named); its targets must be declared in the file; its
session filters are the rules' (`session`, `labels`, `title`, `tags`) and its
`template` is parsed as a rule's and must render a sample report. Every
problem goes to the builder's `ProblemLog` with file, line and key.
"""

from __future__ import annotations

import time
from typing import Any

from watcher.config.cron import CronError, parse_calendar, parse_timezone
from watcher.config.models import ReportSection
from watcher.config.problemlog import ProblemLog
from watcher.config.problems import unknown_name
from watcher.config.rules import CHECK_TIME_LIMIT, RuleBuilder
from watcher.config.yamlsafe import KeyPath
from watcher.core.model import EventType
from watcher.core.settings import ReportSpec, Settings, WebhookTemplate


class ReportBuilder:
    """Builds the reports and checks their templates, reporting every problem to `log`."""

    def __init__(self, log: ProblemLog, rules: RuleBuilder) -> None:
        self.log = log
        self.rules = rules  # for templates: a report's is parsed and placed as a rule's
        self.index: dict[str, int] = {}  # report name -> its index in the file

    def reports(self, raw: Any, raw_targets: Any) -> tuple[ReportSpec, ...]:
        """Every valid report of the `reports` list, in file order."""
        at: KeyPath = ("reports",)
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.log.report(at, "expected a list of reports")
            return ()
        target_names = list(raw_targets) if isinstance(raw_targets, dict) else []
        names: dict[str, int] = {}
        out: list[ReportSpec] = []
        for index, item in enumerate(raw):
            here = (*at, index)
            self.log.unique(names, item, (*here, "name"), "report name")
            section = self.log.validate(ReportSection, item, here)
            if section is None:
                continue
            self.index.setdefault(section.name, index)
            ok = self._schedule(section, here)
            notify = self._targets(section, item, here, target_names)
            template = self.rules.rule_template(section.template, (*here, "template"))
            if not ok or notify is None or (section.template is not None and template is None):
                continue
            window = section.window
            out.append(
                ReportSpec(
                    name=section.name,
                    schedule=" ".join(section.schedule.split()),
                    timezone=section.timezone,
                    window=None if isinstance(window, str) else window,
                    session_globs=section.session or (),
                    labels=dict(section.labels),
                    title_globs=section.title or (),
                    tags=section.tags or (),
                    notify=notify,
                    template=template,
                    group_by=section.group_by,
                    skip_empty=section.skip_empty,
                    misfire_grace=section.misfire_grace,
                )
            )
        return tuple(out)

    def _schedule(self, section: ReportSection, at: KeyPath) -> bool:
        """The cron expression and timezone can be used; each problem at its own key."""
        try:
            parse_timezone(section.timezone)
        except CronError as error:
            self.log.report((*at, "timezone"), str(error))
            return False
        try:
            parse_calendar(section.schedule, section.timezone)
        except CronError as error:
            self.log.report((*at, "schedule"), str(error))
            return False
        return True

    def _targets(
        self, section: ReportSection, raw: Any, at: KeyPath, target_names: list[str]
    ) -> tuple[str, ...] | None:
        given = raw.get("notify") if isinstance(raw, dict) else None
        listed = isinstance(given, list)
        notify: list[str] = []
        ok = True
        for i, value in enumerate(section.notify):
            where: KeyPath = (*at, "notify", i) if listed else (*at, "notify")
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
        """Each report's template suits its targets and renders a sample report."""
        if not any(r.template for r in settings.reports):
            return
        # Imported here: Jinja2 loads only for a config that has templates.
        from watcher.core.sandbox import within  # noqa: PLC0415
        from watcher.core.template import check_template, suits  # noqa: PLC0415

        for spec in settings.reports:
            if spec.template is None:
                continue
            at: KeyPath = ("reports", self.index.get(spec.name, 0), "template")
            wrong = [
                settings.targets[n]
                for n in spec.notify
                if n in settings.targets and not suits(spec.template, settings.targets[n].kind)
            ]
            if wrong:
                given = (
                    "'body' is for webhook"
                    if isinstance(spec.template, WebhookTemplate)
                    else "'text'/'blocks' are for Slack"
                )
                names = ", ".join(f"'{t.name}' ({t.kind})" for t in wrong)
                self.log.report(
                    at,
                    f"this template does not suit every target the report notifies: {given} "
                    f"targets, not {names}; split the report by target kind",
                )
                continue
            limits = within(CHECK_TIME_LIMIT, time.monotonic)
            for problem in check_template(spec.template, [EventType.REPORT], None, limits):
                self.rules.report_template(at, problem.part, problem.line, problem.message)
