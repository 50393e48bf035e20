"""The poll recorder: lines as replay reads them, written off the caller's thread."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from watcher.core.poll import Fetched, FetchFailed, FetchFailureKind, NotFound
from watcher.core.snapshot import parse_snapshot
from watcher.poll.recorder import DROPPED, PollRecorder

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)


def fetched(size: int = 0) -> Fetched:
    """A 200 for s1; `size` pads its title to make the line that long."""
    body = {
        "sessionId": "s1",
        "title": "x" * size or "release",
        "status": "idle",
        "messageCount": 1,
        "createdAt": 1_000,
        "updatedAt": 2_000,
    }
    return Fetched(parse_snapshot(body), body)


def test_polls_are_written_one_json_line_each_and_failures_skipped(tmp_path: Path) -> None:
    """A 200 with its body and a 404 are recorded in order; a failed poll is not."""
    path = tmp_path / "polls.jsonl"
    recorder = PollRecorder(path)
    recorder.write("s1", fetched(), T0)
    recorder.write("s1", FetchFailed(FetchFailureKind.RETRYABLE, "timeout"), T0)
    recorder.write("s1", NotFound(), T0)
    recorder.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["session"], x["status"], "body" in x) for x in lines] == [
        ("s1", 200, True),
        ("s1", 404, False),
    ]
    assert recorder.failures == {}


def test_a_stalled_file_never_blocks_the_caller_and_drops_are_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the writer stuck on a pipe nobody reads, `write` returns at once; the rest drop."""
    pipe = tmp_path / "polls.fifo"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    counted: list[str] = []
    recorder = PollRecorder(pipe, capacity=1)
    recorder.count_failures_with(counted.append)
    big = fetched(200_000)  # one line is more than a pipe holds
    done = threading.Event()

    def write_many() -> None:
        for _ in range(20):
            recorder.write("s1", big, T0)
        done.set()

    threading.Thread(target=write_many, daemon=True).start()
    try:
        assert done.wait(30), "write() blocked on the file"
        dropped = recorder.failures.get(DROPPED, 0)
        assert dropped >= 18  # one poll in the writer's hands, one queued, the rest dropped
        assert counted == [DROPPED] * dropped
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1
        assert "the writer is behind" in warnings[0]
    finally:
        os.close(reader)  # the stuck write now fails (a broken pipe), and the writer ends
        recorder.close()


def test_a_lone_surrogate_in_a_body_is_recorded_as_its_json_escape(tmp_path: Path) -> None:
    """`"\\ud800"` decodes to a string UTF-8 cannot hold: the line keeps the escape instead."""
    path = tmp_path / "polls.jsonl"
    recorder = PollRecorder(path)
    payload = {**(fetched().body or {}), "title": json.loads(b'"\\ud800"')}
    recorder.write("s1", Fetched(parse_snapshot(payload), payload), T0)
    recorder.write("s1", fetched(), T0)
    recorder.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["body"]["title"] for line in lines] == ["\ud800", "release"]
    assert recorder.failures == {}


def test_a_poll_the_writer_cannot_encode_is_counted_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure inside the writer thread costs that poll, never the recording of the next."""
    path = tmp_path / "polls.jsonl"
    counted: list[str] = []
    recorder = PollRecorder(path)
    recorder.count_failures_with(counted.append)
    good = fetched()
    recorder.write("s1", Fetched(good.snapshot, {"title": object()}), T0)  # not JSON
    recorder.write("s1", good, T0)
    recorder.close()
    assert recorder.failures == {"TypeError": 1}
    assert counted == ["TypeError"]
    [line] = [json.loads(line) for line in path.read_text().splitlines()]
    assert line["body"]["title"] == "release"
    assert any("not recording polls" in r.getMessage() for r in caplog.records)
