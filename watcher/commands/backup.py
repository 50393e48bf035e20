"""`factory-watcher backup PATH`: an online copy of the state database.

The store copies the database in one step from a read-only view
(`ReadOnlyStore.copy_to`; SQLite's backup API): one consistent snapshot
even while the daemon writes (in WAL mode the daemon's writes never wait
for it), checked whole before it returns. This module owns the file
handling around it: the copy is written to a temporary file beside PATH,
made durable, and only then linked to PATH, which fails if PATH exists: an
existing file is never overwritten, and a crash never leaves half a backup
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watcher.store import ReadOnlyStore, StoreError, open_read_only


class BackupError(Exception):
    """The backup could not be made; nothing was written at the destination."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What was written."""

    path: Path
    bytes: int
    pages: int


def backup_database(
    source: Path, destination: Path, *, opener: Callable[[Path], ReadOnlyStore] = open_read_only
) -> BackupResult:
    """Copy the database at `source` to the new file `destination`."""
    if destination.exists() or destination.is_symlink():
        raise BackupError(f"{destination} already exists; backup never overwrites a file")
    directory = destination.parent
    if not directory.is_dir():
        raise BackupError(f"directory {directory} does not exist")
    try:
        src = opener(source)
    except StoreError as error:
        raise BackupError(str(error)) from None
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
    os.close(handle)
    scratch = Path(temporary)
    try:
        try:
            pages = src.copy_to(scratch)
        except StoreError as error:
            raise BackupError(str(error)) from None
        _fsync(scratch)
        try:
            os.link(scratch, destination)  # atomic, and refuses an existing name
        except FileExistsError:
            raise BackupError(
                f"{destination} already exists; backup never overwrites a file"
            ) from None
        except OSError as error:
            raise BackupError(f"cannot create {destination}: {error.strerror}") from None
        _fsync(directory)
    finally:
        src.close()
        for leftover in (scratch, *(Path(f"{scratch}{s}") for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return BackupResult(destination, destination.stat().st_size, pages)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
