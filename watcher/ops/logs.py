"""Logging to stderr, one line per event, with secrets redacted and chatty libraries quieted.

Two formats:

- `text`: `time level logger: message key=value ...`; without the time when
  stderr is the systemd journal (`$JOURNAL_STREAM` names it), which adds its own;
- `json`: one object per line with stable keys `ts`, `level`, `logger`,
  `event`, then the record's context (`session`, `target`, `rule`,
  `event_id`, ...) and `exc` for a traceback.

Context travels with a record as `extra=context(session=..., target=...)`.
Secrets are masked in the message, the context and tracebacks alike.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from watcher.core.secret import redact

# Libraries that log request URLs at INFO (httpx: "HTTP Request: POST <url>"): a
# webhook URL can be a credential, and a line per poll is noise.
QUIET_LOGGERS = ("httpx", "httpcore", "slack_sdk", "aiohttp", "asyncio")
LOG_FORMATS = ("text", "json")
CONTEXT = "context"  # the LogRecord attribute that carries a record's context
_RESERVED = frozenset({"ts", "level", "logger", "event", "exc"})


def context(**fields: object) -> dict[str, Any]:
    """`extra=` for a log call: key=value context, shown in text and as JSON keys."""
    return {CONTEXT: {k: v for k, v in fields.items() if v is not None}}


def _context_of(record: logging.LogRecord) -> Mapping[str, Any]:
    found = getattr(record, CONTEXT, None)
    return found if isinstance(found, Mapping) else {}


class RedactingFilter(logging.Filter):
    """Replaces every known secret value in a record's message, context and traceback.

    The values are a fixed list (`update`), or whatever a running daemon says is
    in force at each record (`follow`): a reload then changes them without the
    list growing, and a replaced config's values are masked only while something
    built from it may still quote them.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = tuple(secrets)
        self._source: Callable[[], tuple[str, ...]] | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values masked now."""
        return self._secrets if self._source is None else self._source()

    def update(self, secrets: Iterable[str]) -> None:
        """Mask exactly `secrets` from now on."""
        self._secrets = tuple(secrets)
        self._source = None

    def follow(self, source: Callable[[], tuple[str, ...]]) -> None:
        """Mask what `source()` returns at each record from now on (the daemon's secrets
        in force, which a reload changes)."""
        self._source = source

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        record.msg, record.args = redact(record.getMessage(), secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        fields = _context_of(record)
        if fields:
            setattr(
                record,
                CONTEXT,
                {k: redact(v, secrets) if isinstance(v, str) else v for k, v in fields.items()},
            )
        return True


def _show(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """`[time ]level logger: message key=value ...` on one line per record."""

    def __init__(self, *, timestamps: bool = True) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        if timestamps:
            fmt = "%(asctime)s " + fmt
        super().__init__(fmt, "%Y-%m-%dT%H:%M:%S%z")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        line = super().formatMessage(record)
        fields = _context_of(record)
        if fields:
            line += " " + " ".join(f"{k}={_show(v)}" for k, v in fields.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, keys `ts`, `level`, `logger`, `event` and the context."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _context_of(record).items():
            document[f"ctx_{key}" if key in _RESERVED else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc"] = record.exc_text
        return json.dumps(document, ensure_ascii=False, default=str)


def under_journal(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """Whether `stream` (default stderr) is the systemd journal, which timestamps lines itself.

    systemd sets `JOURNAL_STREAM=DEVICE:INODE` of the stream it connected; a
    process whose stderr was redirected elsewhere inherits the variable but
    not the stream, so both must match (as sd_journal_stream_fd(3) advises).
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def configure_logging(
    level: str = "INFO",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    fmt: str = "text",
    journal: bool | None = None,
) -> RedactingFilter:
    """Log to stderr in `fmt` (`text` or `json`); returns the redaction filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter(
                timestamps=not (under_journal(stream=stream) if journal is None else journal)
            )
        )
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return redactor
