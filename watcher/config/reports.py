"""The `reports` section: scheduled reports, each checked and built into a `ReportSpec`.

A report's name is unique; its `schedule` is a cron expression and its
`timezone` an IANA zone (both checked by `watcher.config.cron`, with the
field that is wrong named); its targets must be declared in the file; its
session filters are the rules' (`session`, `labels`, `title`, `tags`) and its
`template` is parsed as a rule's and must render a sample report. Every
problem goes to the builder's `ProblemLog` with file, line and key.
"""

from __future__ import annotations

from typing import Any

from watcher.config.cron import CronError, parse_calendar
from watcher.config.models import ReportSection
from watcher.config.problemlog import ProblemLog
from watcher.config.rules import RuleBuilder, session_filters
from watcher.config.yamlsafe import KeyPath
from watcher.core.model import EventType
from watcher.core.settings import ReportSpec, Settings


class ReportBuilder:
    """Builds the reports and checks their templates, reporting every problem to `log`."""

    def __init__(self, log: ProblemLog, rules: RuleBuilder) -> None:
        self.log = log
        self.rules = rules  # for templates: a report's is parsed and placed as a rule's
        self.index: dict[str, int] = {}  # report name -> its index in the file

    def reports(self, raw: Any, raw_targets: Any) -> tuple[ReportSpec, ...]:
        """Every valid report of the `reports` list, in file order."""
        at: KeyPath = ("reports",)
        target_names = list(raw_targets) if isinstance(raw_targets, dict) else []
        out: list[ReportSpec] = []
        for index, item, section in self.log.named_items(ReportSection, raw, at, "report"):
            here = (*at, index)
            self.index.setdefault(section.name, index)
            ok = self._schedule(section, here)
            notify = self.rules.targets(section.notify, item, here, target_names)
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
                    **session_filters(section),
                    notify=notify,
                    template=template,
                    group_by=section.group_by,
                    skip_empty=section.skip_empty,
                    misfire_grace=section.misfire_grace,
                )
            )
        return tuple(out)

    def _schedule(self, section: ReportSection, at: KeyPath) -> bool:
        """The cron expression can be used (the timezone was checked with the section)."""
        try:
            parse_calendar(section.schedule, section.timezone)
        except CronError as error:
            self.log.report((*at, "schedule"), str(error))
            return False
        return True

    def check_templates(self, settings: Settings) -> None:
        """Each report's template suits its targets and renders a sample report."""
        advice = "split the report by target kind"
        for spec in settings.reports:
            if spec.template is None:
                continue
            at: KeyPath = ("reports", self.index.get(spec.name, 0), "template")
            targets = settings.targets
            if self.rules.template_suits(at, spec.template, spec.notify, targets, "report", advice):
                self.rules.check_template(at, spec.template, [EventType.REPORT])
