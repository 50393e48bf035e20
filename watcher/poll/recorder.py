"""Recording polls: every successful poll's body and time, one JSON line each (for replay)."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import IO

from watcher.core.poll import Fetched, FetchResult, NotFound


class RecordError(Exception):
    """The record file cannot be opened; names the file and why."""


class PollRecorder:
    """Appends `{"at", "session", "status", "body"}` lines to a file; 404s are recorded too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = path.open("a", encoding="utf-8")
        except OSError as error:
            raise RecordError(
                f"cannot open the record file {path}: {error.strerror or type(error).__name__}"
            ) from None
        self._lock = threading.Lock()

    def write(self, session_id: str, result: FetchResult, now: datetime) -> None:
        """Record one successful poll (a 200 with its body, or a 404); failures are skipped."""
        if isinstance(result, Fetched):
            line = {"at": now.isoformat(), "session": session_id, "status": 200}
            line["body"] = dict(result.body) if result.body is not None else None
        elif isinstance(result, NotFound):
            line = {"at": now.isoformat(), "session": session_id, "status": 404}
        else:
            return
        text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file is None:
                return
            self._file.write(text + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
