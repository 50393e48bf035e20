"""Recording polls: every successful poll's body and time, one JSON line each (for replay).

The file is written by a thread of its own, fed through a bounded queue, so a
slow or failing disk never holds up the event loop: `write` only enqueues,
and when the writer falls behind by a full queue, polls are dropped and
counted. A write that fails (a full disk, an I/O error) costs one warning per
kind of failure while it lasts and a count per poll, never a traceback; a
partly written line is cut off again, so the file stays one poll per line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from watcher.core.poll import Fetched, FetchResult, NotFound

log = logging.getLogger("watcher.recorder")

QUEUE_LINES = 1024  # polls waiting for the writer; beyond that they are dropped
DROPPED = "dropped"  # the failure kind of a poll the full queue had no room for
CLOSE_WAIT = 5.0  # seconds `close` waits for the writer to finish the queue


class RecordError(Exception):
    """The record file cannot be opened; names the file and why."""


def failure_kind(error: OSError) -> str:
    """A fixed name for an I/O failure (`ENOSPC`, `EIO`, ...), fit for a metric label."""
    return errno.errorcode.get(error.errno or 0, "OSError")


class PollRecorder:
    """Appends `{"at", "session", "status", "body"}` lines to a file; 404s are recorded too.

    `count_failure(kind)` is told of every poll not recorded: an `errno` name
    when writing failed, `dropped` when the queue was full (the daemon counts
    them in `factory_watcher_record_failures_total`).
    """

    def __init__(self, path: Path, *, capacity: int = QUEUE_LINES) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a failed write leaves nothing behind to be retried by the next.
            self._file: IO[bytes] | None = path.open("ab", buffering=0)
        except OSError as error:
            raise RecordError(
                f"cannot open the record file {path}: {error.strerror or type(error).__name__}"
            ) from None
        self._queue: queue.Queue[tuple[str, FetchResult, datetime] | None] = queue.Queue(capacity)
        self._lock = threading.Lock()  # failures are counted from the loop and the writer
        self._failures: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._count: Callable[[str], None] = lambda _kind: None
        self._closed = False
        self._writer = threading.Thread(target=self._write_all, name="poll-recorder", daemon=True)
        self._writer.start()

    @property
    def failures(self) -> Mapping[str, int]:
        """Polls not recorded so far, by kind of failure (`ENOSPC`, `dropped`, ...)."""
        with self._lock:
            return dict(self._failures)

    def count_failures_with(self, count: Callable[[str], None]) -> None:
        """Tell `count(kind)` of every poll not recorded from now on (from any thread)."""
        self._count = count

    def write(self, session_id: str, result: FetchResult, now: datetime) -> None:
        """Queue one successful poll (a 200 with its body, or a 404) for the writer;
        failures are skipped. Never blocks and never raises for the file's sake.
        """
        if self._closed or not isinstance(result, Fetched | NotFound):
            return
        try:
            self._queue.put_nowait((session_id, result, now))
        except queue.Full:
            self._failed(DROPPED, "the writer is behind; polls are dropped while it catches up")

    def close(self) -> None:
        """Write what is queued (waiting at most `CLOSE_WAIT`), then close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + CLOSE_WAIT
        # The writer stops after the polls queued before it; a full queue behind a
        # stuck writer must not hold the caller (the event loop) for longer.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=CLOSE_WAIT)
        self._writer.join(max(deadline - time.monotonic(), 0.0))

    # --- the writer thread --------------------------------------------------------

    def _write_all(self) -> None:
        """Write queued polls until told to stop; a batch is written as one."""
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < 64:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            lines = [line for poll in batch if poll is not None and (line := self._line(poll))]
            if lines:
                try:
                    self._append(lines)
                except Exception as error:  # a bug: these polls go unrecorded, not the next
                    for _ in lines:
                        self._failed(type(error).__name__, f"cannot write: {error}")
            if self._queue.empty():
                self._caught_up(DROPPED)
        if self._file is not None:
            self._file.close()
            self._file = None

    def _line(self, poll: tuple[str, FetchResult, datetime]) -> str:
        """`poll` as its JSON line; "" (counted) if it cannot be one: it alone is lost."""
        try:
            return _line(*poll)
        except Exception as error:  # a body JSON cannot hold: a bug, not a reason to stop
            self._failed(type(error).__name__, f"cannot encode a poll of {poll[0]}: {error}")
            return ""

    def _append(self, lines: list[str]) -> None:
        """Append `lines`; on failure, count each poll and cut off any part written."""
        assert self._file is not None
        # A lone surrogate (a JSON `\ud800` escape in a body) is written back as that escape.
        data = "".join(line + "\n" for line in lines).encode("utf-8", "backslashreplace")
        try:
            start = os.fstat(self._file.fileno()).st_size
        except OSError:
            start = None
        try:
            view = memoryview(data)
            while view:  # a raw write may take only part (a pipe, a signal)
                view = view[self._file.write(view) or 0 :]
        except OSError as error:
            self._truncate(start)
            kind = failure_kind(error)
            for _ in lines:
                self._failed(kind, f"cannot write: {error.strerror or kind}")
            return
        with self._lock:
            passed = self._warned - {DROPPED}
        for kind in passed:
            self._caught_up(kind)

    def _truncate(self, size: int | None) -> None:
        """Cut the file back to `size`: a partly written line must not stay."""
        if size is None or self._file is None:
            return
        # A device such as /dev/full cannot be truncated, and keeps nothing anyway.
        with contextlib.suppress(OSError):
            os.ftruncate(self._file.fileno(), size)

    def _failed(self, kind: str, reason: str) -> None:
        """Count a poll not recorded; warn once per kind while failures last."""
        with self._lock:
            self._failures[kind] += 1
            first = kind not in self._warned
            self._warned.add(kind)
        self._count(kind)
        if first:
            log.warning(
                "not recording polls to %s: %s (said once until it passes)", self.path, reason
            )

    def _caught_up(self, kind: str) -> None:
        """A failure of `kind` has passed: say so, and warn again if it comes back."""
        with self._lock:
            if kind not in self._warned:
                return
            self._warned.discard(kind)
        log.info("recording polls to %s again (%s has passed)", self.path, kind)


def _line(session_id: str, result: FetchResult, now: datetime) -> str:
    """One poll as its JSON line."""
    line: dict[str, Any] = {"at": now.isoformat(), "session": session_id}
    if isinstance(result, Fetched):
        line["status"] = 200
        line["body"] = dict(result.body) if result.body is not None else None
    else:
        line["status"] = 404
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
