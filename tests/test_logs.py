"""Logging: one line per record on stderr, secrets masked, chatty libraries quiet."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from watcher.logs import QUIET_LOGGERS, configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as the test found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_secrets_are_masked_in_messages_arguments_and_tracebacks() -> None:
    """A secret in the format string, in an argument or in a traceback is masked."""
    stream = io.StringIO()
    redactor = configure_logging("INFO", stream=stream, secrets=["fk-secret-1"])
    log = logging.getLogger("watcher.test")
    log.info("key fk-secret-1 in the message")
    log.warning("key %s in an argument", "fk-secret-1")
    try:
        raise RuntimeError("boom fk-secret-1")
    except RuntimeError:
        log.exception("failed")
    redactor.update([*redactor.secrets, "xoxb-rotated"])
    log.error("new token %s", "xoxb-rotated")
    text = stream.getvalue()
    assert "fk-secret-1" not in text
    assert "xoxb-rotated" not in text
    assert text.count("********") == 5  # the traceback quotes the raising line too
    assert "RuntimeError" in text


@pytest.mark.usefixtures("restore_logging")
def test_one_line_per_record_and_quiet_libraries() -> None:
    """Records are single lines with time, level and logger; library INFO is dropped."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("watcher.daemon").info("event one")
    logging.getLogger("httpx").info("HTTP Request: POST https://hooks.example.com/secret-path")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO watcher.daemon: event one")
    assert all(logging.getLogger(name).level == logging.WARNING for name in QUIET_LOGGERS)
