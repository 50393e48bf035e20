"""Logging to stderr, one line per event, with secrets redacted and chatty libraries quieted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

REDACTED = "********"
MIN_SECRET_LENGTH = 4

# Libraries that log request URLs at INFO (httpx: "HTTP Request: POST <url>") or
# every job run (APScheduler): a webhook URL can be a credential, and a line per
# poll is noise.
QUIET_LOGGERS = ("httpx", "httpcore", "apscheduler", "slack_sdk", "aiohttp", "asyncio")


class RedactingFilter(logging.Filter):
    """Replaces every known secret value in a record's final message with a mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the set of values to mask (after a reload)."""
        self.secrets = tuple(
            sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)
        )

    def redact(self, text: str) -> str:
        """`text` with every secret masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self.redact(message)
        record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
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
