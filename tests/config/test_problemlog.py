"""The problem log the builder's parts share: where each problem is, and which stay silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config import yamlsafe
from watcher.config.models import PollSection
from watcher.config.problemlog import ProblemLog
from watcher.config.yamlsafe import KeyPath

DOCUMENT = """\
poll:
  interval: soon
  jitter: 10%
sessions:
  - id: a
  - id: b
  - id: a
"""


@pytest.fixture
def log() -> ProblemLog:
    """A log for DOCUMENT, read as c.yaml."""
    return ProblemLog(Path("c.yaml"), yamlsafe.parse(DOCUMENT))


def rendered(log: ProblemLog) -> list[str]:
    """The problems in the order the error lists them."""
    return [str(problem) for problem in log.error().problems]


@pytest.mark.parametrize(
    ("settled", "at", "shown"),
    [
        ((), ("poll", "interval"), True),
        (("poll", "interval"), ("poll", "interval"), False),
        (("poll",), ("poll", "interval"), False),  # everything under a settled key
        (("poll", "interval"), ("poll",), True),  # not the key above it
        (("poll", "interval"), ("poll", "jitter"), True),  # nor its siblings
    ],
)
def test_a_settled_key_silences_itself_and_what_is_under_it(
    log: ProblemLog, settled: KeyPath, at: KeyPath, shown: bool
) -> None:
    """A problem at a settled key, or below one, is not reported again."""
    if settled:
        log.settle(settled)
    log.report(at, "wrong")
    assert bool(log.problems) is shown


def test_problems_name_file_line_and_key_in_file_order(log: ProblemLog) -> None:
    """The error lists problems by line; one without a line comes first."""
    log.report(("sessions", 1, "id"), "second")
    log.report(("poll", "jitter"), "first")
    log.report(("nowhere",), "no line")
    assert rendered(log) == [
        "c.yaml: nowhere: no line",
        "c.yaml:3: poll.jitter: first",
        "c.yaml:6: sessions[1].id: second",
    ]


def test_a_line_worked_out_by_the_caller_is_kept_even_at_a_settled_key(log: ProblemLog) -> None:
    """`report_on_line` takes the caller's line (a template's own line) and ignores settling."""
    log.settle(("poll",))
    log.report_on_line(("poll", "interval"), 40, "template line")
    assert rendered(log) == ["c.yaml:40: poll.interval: template line"]


def test_validate_reports_each_error_at_its_line_or_returns_the_model(log: ProblemLog) -> None:
    """A bad section is None with its errors at their lines; a good one is the model."""
    assert log.validate(PollSection, {"interval": "soon"}, ("poll",)) is None
    assert [p.split(":", 2)[:2] for p in rendered(log)] == [["c.yaml", "2"]]
    assert "poll.interval" in rendered(log)[0]
    section = log.validate(PollSection, {"jitter": "10%"}, ("poll",))
    assert section is not None
    assert section.jitter == pytest.approx(0.1)


def test_a_duplicate_names_the_line_of_the_first(log: ProblemLog) -> None:
    """`unique` remembers each value's line and reports a repeat with it."""
    seen: dict[str, int] = {}
    for index, item in enumerate([{"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": 5}]):
        log.unique(seen, item, ("sessions", index, "id"), "session id")
    assert rendered(log) == ["c.yaml:7: sessions[2].id: duplicate session id 'a' (first on line 5)"]
