"""Exit codes of the `factory-watcher` command, and where a failure becomes one.

Every command returns one of the sysexits-style codes below. Two failures are
shared by many commands and are turned into a message and a code here only:
a config that does not load (`load_config`, exit 78) and a state database the
store cannot open or use (`store_error_exit`: exit 73, or 78 for a database
written by a newer release, which systemd must not restart into again and again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

# Imported when a command needs them (see watcher.commands.cli): the loader
# brings pydantic, the store sqlite3.
if TYPE_CHECKING:
    from pathlib import Path

    from watcher.core.settings import Settings
    from watcher.store import StoreError

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78  # sysexits.h EX_CONFIG; the unit's RestartPreventExitStatus=78
EX_CANTCREAT = 73


def load_config(path: Path, err: TextIO) -> Settings | None:
    """The settings in the config at `path`, or None after listing every problem on `err`."""
    from watcher.config.loader import ConfigError, load_settings

    try:
        return load_settings(path)
    except ConfigError as error:
        print(f"factory-watcher: invalid configuration:\n{error}", file=err)
        return None


def store_error_exit(error: StoreError, err: TextIO) -> int:
    """Say what is wrong with the state database on `err`; the exit code it maps to.

    The one place a store failure becomes an exit code: every command that
    opens the store catches `StoreError` and returns this.
    """
    from watcher.store import SchemaTooNewError

    print(f"factory-watcher: {error}", file=err)
    return EX_CONFIG if isinstance(error, SchemaTooNewError) else EX_CANTCREAT
