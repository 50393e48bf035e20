"""The builder: interpolation, each section built by its part, cross-checks -> `Settings`.

The parts: `sections` (factory, poll, discover, http, state, quiet_hours,
sessions), `targets`, `rules` (with their templates) and `reports`. They share one
`ProblemLog`: every problem is collected rather than stopping at the first,
and a problem found in one phase silences later phases at the same key.
`Builder` is the one entry the loader uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watcher.config import yamlsafe
from watcher.config.models import SECTIONS, TopLevelValues
from watcher.config.problemlog import ProblemLog
from watcher.config.problems import unknown_name
from watcher.config.reports import ReportBuilder
from watcher.config.rules import RuleBuilder
from watcher.config.secrets import SecretReader
from watcher.config.sections import SectionBuilder
from watcher.config.targets import TargetBuilder
from watcher.config.yamlsafe import KeyPath
from watcher.core.settings import LogFormat, Settings

_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Builder:
    """Turns one parsed document into Settings, collecting every problem on the way."""

    def __init__(
        self,
        path: Path,
        document: yamlsafe.Document,
        env: Mapping[str, str],
        credentials_dir: Path | None,
        mode: int,
    ) -> None:
        self.path = path
        self.env = env
        self.log = ProblemLog(path, document)
        self.interpolated: set[KeyPath] = set()
        self.secrets = SecretReader(self.log.report, path, credentials_dir, mode, self.interpolated)
        self.sections = SectionBuilder(self.log, self.secrets, env)
        self.targets = TargetBuilder(self.log, self.secrets)
        self.rules = RuleBuilder(self.log)
        self.reports = ReportBuilder(self.log, self.rules)

    def build(self) -> Settings:
        """Run the phases after parsing; raise ConfigError if anything was reported."""
        data = self.interpolate(self.log.document.data, ())
        if not isinstance(data, dict):
            self.log.report(
                (), "the top level must be a mapping of sections: " + ", ".join(SECTIONS)
            )
            raise self.log.error()
        for key in data:
            if key not in SECTIONS:
                self.log.report((key,), unknown_name("section", key, SECTIONS))
        sections = self.sections
        factory = sections.factory(data.get("factory"))
        poll = sections.poll(data.get("poll"))
        discover = sections.discover(data.get("discover")) if "discover" in data else None
        state = sections.state(data.get("state"))
        watched = sections.sessions(data.get("sessions"))
        targets = self.targets.targets(data.get("targets"))
        quiet = sections.quiet_hours(data.get("quiet_hours"))
        rules = self.rules.rules(data.get("rules"), data.get("targets"), data.get("quiet_hours"))
        reports = self.reports.reports(data.get("reports"), data.get("targets"))
        http = sections.http(data.get("http"))
        values = self.log.validate(
            TopLevelValues, {k: data[k] for k in TopLevelValues.model_fields if k in data}, ()
        )
        self.secrets.check_inline_secrets()
        if self.log.problems or factory is None or poll is None or state is None or values is None:
            raise self.log.error()
        settings = Settings(
            factory=factory,
            state_path=state.path,
            state_url=state.url,
            ha=state.ha,
            poll=poll,
            sessions=watched,
            discover=discover,
            targets=targets,
            rules=rules,
            source=self.path,
            http=http,
            log_format=LogFormat(values.log_format),
            quiet_hours=quiet,
            record_path=sections.record_path(data.get("state")),
            retention=sections.retention(data.get("state")),
            reports=reports,
        )
        sections.check_budget(settings)
        self.rules.check_templates(settings)
        self.reports.check_templates(settings)
        if self.log.problems:
            raise self.log.error()
        return settings

    def interpolate(self, value: Any, at: KeyPath) -> Any:
        """Replace `${NAME}` in every string value (not key) with `env[NAME]`."""
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*at, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*at, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        failed = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal failed
            if match[0] == "$${":
                return "${"
            name = match[1]
            if name is None:
                self.log.report(at, "unterminated '${' (write '$${' for a literal '${')")
            elif not _ENV_NAME.fullmatch(name):
                # The text between the braces is not quoted: this may be a secret's value.
                self.log.report(at, "invalid variable reference: names are letters, digits and '_'")
            elif name not in self.env:
                self.log.report(at, f"environment variable '{name}' is not set")
            else:
                self.interpolated.add(at)
                return self.env[name]
            failed = True
            return match[0]

        result = _ENV_REFERENCE.sub(substitute, value)
        if failed:
            self.log.settle(at)
        return result
