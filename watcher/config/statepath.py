"""Where the state database lives, read from a config without the full loader.

The `outbox` commands need nothing from the config but this path. The full
loader (`watcher.config`) imports pydantic and builds a model per section,
which costs more than the rest of such a command, so `find_state_path` reads
the one section it needs through the same hardened YAML parser. Whenever the
file or its `state` section is anything but plain, it answers None and the
caller falls back to the full loader, which names the problem.

`resolve_state_path` is the rule the full loader applies as well
(tests/test_statepath.py holds the two to the same answers).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from watcher.config import yamlsafe

DEFAULT_STATE_FILE = "factory-watcher.db"
STATE_FILE_IN_STATE_DIRECTORY = "state.db"
# The full loader's limit; a larger file is left to it, to be refused with its message.
_MAX_CONFIG_BYTES = 1 << 20


def resolve_state_path(configured: str | None, env: Mapping[str, str], cwd: Path) -> Path:
    """`state.path`, else `$STATE_DIRECTORY/state.db`, else `./factory-watcher.db`; absolute."""
    if configured is not None:
        chosen = Path(configured)
    elif env.get("STATE_DIRECTORY"):
        # systemd joins several StateDirectory= entries with ':'; ours is the first.
        chosen = Path(env["STATE_DIRECTORY"].split(":")[0]) / STATE_FILE_IN_STATE_DIRECTORY
    else:
        chosen = Path(DEFAULT_STATE_FILE)
    # Absolute now, so a later change of working directory cannot move the database.
    return cwd / chosen


def find_state_path(config: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """The state database path that the config file at `config` names, or None.

    None means "ask the full loader": the file is not a readable regular UTF-8
    file within the size limit, is not valid YAML, or its `state` section is
    not a mapping holding at most a non-empty `path` without `${` (a reference
    the loader would interpolate). Other sections are not looked at.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    try:
        # stat before open: opening a FIFO would block.
        if not stat.S_ISREG(config.stat().st_mode):
            return None
        with config.open("rb") as handle:
            raw = handle.read(_MAX_CONFIG_BYTES + 1)
        if len(raw) > _MAX_CONFIG_BYTES:
            return None
        document = yamlsafe.parse(raw.decode("utf-8").removeprefix("\ufeff"))
    except (OSError, UnicodeDecodeError, yamlsafe.UnsafeYamlError):
        return None
    if not isinstance(document.data, dict):
        return None
    section = document.data.get("state")
    if section is None:
        configured = None
    elif isinstance(section, dict) and set(section) <= {"path"}:
        configured = section.get("path")
    else:
        return None
    if configured is not None and (
        not isinstance(configured, str) or not configured or "${" in configured
    ):
        return None
    return resolve_state_path(configured, environ, Path.cwd())
