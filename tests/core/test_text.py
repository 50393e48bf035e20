"""Making untrusted text encodable, and errors one line long."""

from __future__ import annotations

from typing import Any

import pytest

from watcher.core.text import describe_error, one_line, safe_json, safe_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("\ud800", "\ufffd"),
        ("a\udc00b", "a\ufffdb"),
        ("\ud83d\ude00", "\U0001f600"),  # a pair split in two code points is joined again
        ("\ude00\ud83d", "\ufffd\ufffd"),  # the wrong order is no pair
        ("\x00 ok", "\x00 ok"),  # encodable, so untouched
    ],
)
def test_safe_text(text: str, expected: str) -> None:
    """Only code points UTF-8 cannot encode are replaced, by U+FFFD."""
    assert safe_text(text) == expected
    safe_text(text).encode("utf-8")


def test_safe_json_reaches_keys_and_nested_values() -> None:
    """Every string in a decoded document is made safe, keys and tuples included."""
    value: Any = {"\ud800": ["x\udc00", {"k": ("\udfff",)}], "n": 1, "f": 1.5, "z": None}
    assert safe_json(value) == {
        "\ufffd": ["x\ufffd", {"k": ["\ufffd"]}],
        "n": 1,
        "f": 1.5,
        "z": None,
    }


def test_describe_error_is_one_safe_line() -> None:
    """Type and first words of the message, on one line, capped and encodable."""
    assert describe_error(RuntimeError("bad\n  thing")) == "RuntimeError: bad thing"
    assert describe_error(KeyError()) == "KeyError"
    assert describe_error(ValueError("\ud800")) == "ValueError: \ufffd"
    assert len(one_line("x" * 1000)) == 300
