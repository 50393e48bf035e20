"""The agent's latest final answer, read from `GET /api/v0/sessions/{id}/messages`.

The list's order is not documented (factory-api.md), so the latest answer is
the `final_answer` assistant message with the greatest `createdAt`, the later
in the list on a tie or when `createdAt` is missing. The text is shortened
here, before any escaping, so an entity like `&amp;` is never cut in half.
"""

from __future__ import annotations

from typing import Any

from watcher.core.text import safe_text

ANSWER_LIMIT = 1500  # well inside a Slack section (3000) after escaping grows it
ELLIPSIS = "…"


def shorten_answer(text: str, limit: int = ANSWER_LIMIT) -> str:
    """`text` trimmed, runs of blank lines collapsed, capped at `limit` on a word boundary."""
    lines = [line.rstrip() for line in safe_text(text).strip().splitlines()]
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    flat = "\n".join(kept)
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "\n\n".join(parts)


def _created(message: dict[str, Any]) -> float:
    value = message.get("createdAt")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("-inf")
    return float(value)


def latest_answer(messages: Any, limit: int = ANSWER_LIMIT) -> str | None:
    """The newest final answer's text, shortened; None when there is none."""
    if not isinstance(messages, list):
        return None
    found: tuple[float, int, str] | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") != "assistant" or message.get("phase") != "final_answer":
            continue
        text = _text_of(message).strip()
        if not text:
            continue
        key = (_created(message), index, text)
        if found is None or key[:2] > found[:2]:
            found = key
    return None if found is None else shorten_answer(found[2], limit)
