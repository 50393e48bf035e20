"""Making untrusted text safe to encode, and errors short enough for one line."""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"
REASON_LIMIT = 300


def safe_text(value: str) -> str:
    """`value` with every code point UTF-8 cannot encode (lone surrogates) replaced by U+FFFD.

    Python's json module turns `"\\ud800"` into a `str` that no later step can
    encode; text from outside passes through here once, where it enters, so
    storing, rendering and signing never meet one. A surrogate pair split into
    two code points is joined back into the character it stands for.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def safe_json(value: Any) -> Any:
    """A decoded JSON value with `safe_text` applied to every string, keys included."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_json(item) for item in value]
    return value


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """`text` on one line (whitespace runs collapsed), safe to encode, capped at `limit`."""
    flat = " ".join(safe_text(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe_error(error: BaseException) -> str:
    """An exception as one short line: its type, then its message when it has one."""
    message = one_line(str(error))
    name = type(error).__name__
    return f"{name}: {message}" if message else name
