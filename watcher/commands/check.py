"""`check`: a config that loaded is summed up in one line, with every warning after it.

A config that does not load never gets here: `watcher.commands.exits.load_config`
lists its problems and the command exits 78. Warnings (rules that can never
fire, unused names, a request budget too small) leave the exit code at 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from watcher.commands.exits import EX_OK
from watcher.config.lint import config_warnings
from watcher.core.cadence import budget_warnings
from watcher.core.settings import Settings


def check_command(settings: Settings, path: Path, out: TextIO) -> int:
    """Print what the config at `path` holds and every warning about it; exit 0."""
    discovery = ", discovery on" if settings.discover is not None else ""
    # Never the URL: it may hold the password.
    state = ", state on PostgreSQL" if settings.state_url is not None else ""
    print(
        f"{path}: ok ({len(settings.sessions)} session(s), {len(settings.rules)} "
        f"rule(s), {len(settings.targets)} target(s){discovery}{state})",
        file=out,
    )
    for warning in config_warnings(settings):
        print(f"{path}: warning: {warning}", file=out)
    for warning in budget_warnings(settings):
        print(f"{path}: warning: {warning}", file=out)
    return EX_OK
