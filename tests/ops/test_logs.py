"""Logging: one line per record on stderr, secrets masked, chatty libraries quiet."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.ops.logs import QUIET_LOGGERS, configure_logging, context, under_journal


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
def test_a_following_redactor_masks_what_is_in_force_at_each_record() -> None:
    """`follow` masks what its source says now: a value it drops is no longer masked,
    and the list does not grow; `update` fixes the list again."""
    stream = io.StringIO()
    redactor = configure_logging("INFO", stream=stream, secrets=["fk-secret-1"])
    in_force = ["fk-secret-1", "key-old-1"]
    redactor.follow(lambda: tuple(in_force))
    log = logging.getLogger("watcher.test")
    log.info("one %s %s", "fk-secret-1", "key-old-1")
    in_force[1:] = ["key-new-2"]
    log.info("two %s %s", "key-old-1", "key-new-2")
    assert redactor.secrets == ("fk-secret-1", "key-new-2")
    redactor.update(["key-old-1"])
    log.info("three %s", "key-old-1")
    assert stream.getvalue().splitlines()[0].endswith("one ******** ********")
    assert stream.getvalue().splitlines()[1].endswith("two key-old-1 ********")
    assert stream.getvalue().splitlines()[2].endswith("three ********")


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


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_have_stable_keys_context_and_no_secrets() -> None:
    """Each record is one JSON object: ts, level, logger, event, context; secrets masked."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, secrets=["xoxb-secret-9"], fmt="json")
    log = logging.getLogger("watcher.delivery")
    log.info(
        "delivered with xoxb-secret-9",
        extra=context(session="s1", target="team-slack", rule="finished", event_id="evt_1"),
    )
    log.warning("context carries a secret", extra=context(target="xoxb-secret-9", level="x"))
    try:
        raise ValueError("xoxb-secret-9 in a traceback")
    except ValueError:
        log.exception("failed")
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    first = records[0]
    assert list(first)[:4] == ["ts", "level", "logger", "event"]
    assert first["ts"].endswith("+00:00")
    assert (first["level"], first["logger"]) == ("INFO", "watcher.delivery")
    assert first["event"] == "delivered with ********"
    assert (first["session"], first["target"], first["rule"], first["event_id"]) == (
        "s1",
        "team-slack",
        "finished",
        "evt_1",
    )
    assert records[1]["target"] == "********"
    assert records[1]["level"] == "WARNING"  # context cannot overwrite a stable key
    assert records[1]["ctx_level"] == "x"
    assert "ValueError" in records[2]["exc"]
    assert "xoxb-secret-9" not in stream.getvalue()


@pytest.mark.parametrize(
    ("journal", "starts_with_time"), [(False, True), (True, False)], ids=["tty", "journal"]
)
@pytest.mark.usefixtures("restore_logging")
def test_text_lines_carry_context_and_no_time_under_the_journal(
    journal: bool, starts_with_time: bool
) -> None:
    """Text is `[time ]level logger: message key=value`; the journal adds its own time."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, journal=journal)
    logging.getLogger("watcher.daemon").info(
        "event one", extra=context(session="s 1", target="ci", rule=None)
    )
    line = stream.getvalue().rstrip("\n")
    assert line.endswith('INFO watcher.daemon: event one session="s 1" target=ci')
    assert line[:1].isdigit() is starts_with_time


def test_journal_is_detected_from_journal_stream(tmp_path: Path) -> None:
    """JOURNAL_STREAM counts only when it names the stream itself (device and inode)."""
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        here = f"{info.st_dev}:{info.st_ino}"
        assert under_journal({"JOURNAL_STREAM": here}, stream)
        assert not under_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"}, stream)
        assert not under_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not under_journal({}, stream)
    assert not under_journal({"JOURNAL_STREAM": here}, io.StringIO())
