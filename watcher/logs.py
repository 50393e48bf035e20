"""Logging to stderr, one line per event, with secrets redacted and chatty libraries quieted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

from watcher.core.secret import redact

# Libraries that log request URLs at INFO (httpx: "HTTP Request: POST <url>") or
# every job run (APScheduler): a webhook URL can be a credential, and a line per
# poll is noise.
QUIET_LOGGERS = ("httpx", "httpcore", "apscheduler", "slack_sdk", "aiohttp", "asyncio")


class RedactingFilter(logging.Filter):
    """Replaces every known secret value in a record's final message with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = tuple(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the set of values to mask (after a reload)."""
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


def configure_logging(
    level: str = "INFO", *, stream: TextIO | None = None, secrets: Iterable[str] = ()
) -> RedactingFilter:
    """Log to stderr as `time level logger: message`; returns the redaction filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")
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
