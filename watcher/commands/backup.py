"""`factory-watcher backup PATH`: an online copy of the state database (SQLite backup API).

The copy is taken through SQLite's backup API from a read-only connection,
in one step: it is one consistent snapshot even while the daemon writes
(in WAL mode the daemon's writes never wait for it). It is written to a
temporary file beside PATH, checked with `PRAGMA integrity_check`, made
durable, and only then linked to PATH, which fails if PATH exists: an
existing file is never overwritten, and a crash never leaves half a backup
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from watcher.commands.status import StatusError, open_read_only


class BackupError(Exception):
    """The backup could not be made; nothing was written at the destination."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What was written."""

    path: Path
    bytes: int
    pages: int


def backup_database(source: Path, destination: Path) -> BackupResult:
    """Copy the database at `source` to the new file `destination`."""
    if destination.exists() or destination.is_symlink():
        raise BackupError(f"{destination} already exists; backup never overwrites a file")
    directory = destination.parent
    if not directory.is_dir():
        raise BackupError(f"directory {directory} does not exist")
    try:
        src = open_read_only(source)
    except StatusError as error:
        raise BackupError(str(error)) from None
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
    os.close(handle)
    scratch = Path(temporary)
    try:
        pages = _copy(src, scratch)
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


def _copy(src: sqlite3.Connection, scratch: Path) -> int:
    dst = sqlite3.connect(scratch, isolation_level=None)
    try:
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
        except sqlite3.Error as error:
            raise BackupError(f"backup failed: {error}") from None
        # The copy is a standalone file: no -wal beside it to forget when moving it.
        dst.execute("PRAGMA journal_mode=DELETE")
        check = dst.execute("PRAGMA integrity_check").fetchone()
        if not check or check[0] != "ok":
            raise BackupError(f"the copy failed its integrity check: {check}")
        return int(dst.execute("PRAGMA page_count").fetchone()[0])
    finally:
        dst.close()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
