"""The latest final answer from a messages page, shortened safely."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.core.answer import latest_answer, shorten_answer


def message(
    text: str, *, at: Any = 1, role: str = "assistant", phase: str = "final_answer"
) -> dict[str, Any]:
    """A message object as the API lists it."""
    return {
        "id": text,
        "role": role,
        "phase": phase,
        "createdAt": at,
        "content": [{"type": "text", "text": text}],
    }


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([message("old", at=1), message("new", at=2)], "new"),
        ([message("new", at=2), message("old", at=1)], "new"),  # order is not documented
        ([message("a", at=None), message("b", at=None)], "b"),  # no times: the later one
        ([message("answer"), message("thinking", at=5, phase="commentary")], "answer"),
        ([message("question", at=5, role="user"), message("answer")], "answer"),
        ([message("  "), message("real", at=0)], "real"),
        ([message("x", phase="commentary")], None),
        ([], None),
        ("not a list", None),
        ([None, 3, {"role": "assistant", "phase": "final_answer", "content": "plain"}], "plain"),
    ],
)
def test_latest_answer_picks_the_newest_final_answer(messages: Any, expected: str | None) -> None:
    """Only assistant final answers count; the newest by createdAt, then by position."""
    assert latest_answer(messages) == expected


def test_blocks_of_one_message_are_joined() -> None:
    """Several text blocks make one answer; other block types are skipped."""
    found = {
        "role": "assistant",
        "phase": "final_answer",
        "content": [
            {"type": "text", "text": "one"},
            {"type": "tool_use"},
            {"type": "text", "text": "two"},
        ],
    }
    assert latest_answer([found]) == "one\n\ntwo"


def test_shorten_cuts_on_a_word_with_an_ellipsis() -> None:
    """A long answer is capped on a word boundary; blank-line runs collapse; surrogates go."""
    text = "word " * 1000
    short = shorten_answer(text, 100)
    assert len(short) <= 100
    assert short.endswith("word…")
    assert shorten_answer("a\n\n\n\nb") == "a\n\nb"
    assert shorten_answer("bad \ud800 text") == "bad \ufffd text"
