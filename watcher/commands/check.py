"""`check`: a config that loaded is summed up in one line, with every warning after it.

A config that does not load never gets here: `watcher.commands.exits.load_config`
lists its problems and the command exits 78. Each report's next run times are
listed. Warnings (rules that can never fire, unused names, a request budget too
small, a report looking further back than the store keeps) leave the exit code at 0.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from watcher.commands.exits import EX_OK
from watcher.config.cron import fire_times
from watcher.config.lint import config_warnings
from watcher.core.cadence import budget_warnings
from watcher.core.settings import ReportSpec, Settings

NEXT_RUNS = 3  # run times `check` shows per report


def next_runs(spec: ReportSpec, now: datetime, count: int = NEXT_RUNS) -> list[str]:
    """The report's next run times, each in its timezone and in UTC."""
    zone = ZoneInfo(spec.timezone)
    return [
        f"{t.astimezone(zone).strftime('%a %Y-%m-%d %H:%M %Z')} ({t.strftime('%H:%M')} UTC)"
        for t in fire_times(spec, now, count)
    ]


def check_command(settings: Settings, path: Path, out: TextIO, now: datetime | None = None) -> int:
    """Print what the config at `path` holds, each report's next runs and every warning
    about it; exit 0.
    """
    now = now or datetime.now(UTC)
    discovery = ", discovery on" if settings.discover is not None else ""
    reports = f", {len(settings.reports)} report(s)" if settings.reports else ""
    # Never the URL: it may hold the password.
    state = ", state on PostgreSQL" if settings.state_url is not None else ""
    print(
        f"{path}: ok ({len(settings.sessions)} session(s), {len(settings.rules)} "
        f"rule(s), {len(settings.targets)} target(s){reports}{discovery}{state})",
        file=out,
    )
    for spec in settings.reports:
        print(
            f"{path}: report '{spec.name}' ({spec.schedule}, {spec.timezone}) runs next at:",
            file=out,
        )
        for line in next_runs(spec, now):
            print(f"  {line}", file=out)
    for warning in config_warnings(settings):
        print(f"{path}: warning: {warning}", file=out)
    for warning in budget_warnings(settings):
        print(f"{path}: warning: {warning}", file=out)
    return EX_OK
