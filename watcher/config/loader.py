"""YAML file -> validated, frozen `Settings`; every problem names file, line and key path.

Loading runs in phases, each collecting problems rather than stopping at the
first, so one `factory-watcher check` lists everything wrong with a file:

1. read: a regular file of at most 1 MiB, UTF-8 (`read_config`);
2. parse: hardened YAML into plain data plus a key-path -> line map
   (`watcher.config.yamlsafe`); every scalar is text or null;
3. interpolate `${NAME}` from the environment (`$${` is a literal `${`);
4. validate each section with a pydantic model (extra keys forbidden) and map
   every pydantic error back to its YAML line;
5. cross-check and build: secrets (inline, `${ENV}` or `<key>_file`), target
   references, event types, uniqueness, file permissions.

A problem found in one phase silences later phases at the same key, so a
missing `${VAR}` is reported once, not again as a malformed duration.
Secret values never reach a problem message, a repr or a log line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from watcher.config import yamlsafe
from watcher.config.builder import Builder
from watcher.config.problems import ConfigError, ConfigProblem
from watcher.config.values import parse_duration, parse_jitter
from watcher.config.yamlsafe import render_path
from watcher.core.settings import Settings

__all__ = [
    "MAX_CONFIG_BYTES",
    "ConfigError",
    "ConfigProblem",
    "load_settings",
    "parse_duration",
    "parse_jitter",
]

MAX_CONFIG_BYTES = 1 << 20


def load_settings(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    credentials_dir: Path | None = None,
) -> Settings:
    """Read, validate and build the settings in the YAML file at `path`.

    `env` (default `os.environ`) feeds `${NAME}` interpolation and the
    `STATE_DIRECTORY` default; `credentials_dir` (default
    `$CREDENTIALS_DIRECTORY` from `env`) is searched first for relative
    `*_file` secrets. Raises ConfigError listing every problem found; bad
    input never raises anything else.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if credentials_dir is None and environ.get("CREDENTIALS_DIRECTORY"):
        credentials_dir = Path(environ["CREDENTIALS_DIRECTORY"])
    text, mode = read_config(path)
    try:
        document = yamlsafe.parse(text)
    except yamlsafe.UnsafeYamlError as exc:
        raise ConfigError(
            ConfigProblem(str(path), issue.line, render_path(issue.path), issue.message)
            for issue in exc.issues
        ) from None
    return Builder(path, document, environ, credentials_dir, mode).build()


def read_config(path: Path) -> tuple[str, int]:
    """The file's text and permission bits, or ConfigError (size checked before parsing)."""

    def refuse(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([ConfigProblem(str(path), line, "", message)])

    try:
        # stat before open: opening a FIFO would block.
        if not stat.S_ISREG(path.stat().st_mode):
            raise refuse("not a regular file")
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size > MAX_CONFIG_BYTES:
                raise refuse(f"file is larger than 1 MiB ({info.st_size} bytes)")
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise refuse(f"cannot read the config file: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise refuse("file is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse("not UTF-8 text", raw.count(b"\n", 0, exc.start) + 1) from None
    return text.removeprefix("\ufeff"), stat.S_IMODE(info.st_mode)


# Section models: the shape of the YAML, validated by pydantic.
