"""Rendering events into finished messages: Slack text and blocks, webhook JSON bodies."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from watcher.core.message import Message, SlackMessage, WebhookMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.settings import TargetKind

# Slack limits: section text 3000 chars, message text 40000; titles are capped
# well below so one session cannot crowd out the rest of the message.
SECTION_TEXT_LIMIT = 3000
TITLE_LIMIT = 150
FIELD_LIMIT = 300
ELLIPSIS = "…"


def escape_slack(text: str) -> str:
    """Escape the three characters Slack treats as control syntax.

    With `<` and `>` escaped, untrusted text cannot form `<!channel>`,
    `<@U123>`, `<!subteam^…>` or `<https://evil|innocent>`.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """Cap `text` at `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def _inline(text: str, limit: int = FIELD_LIMIT) -> str:
    """Untrusted text made safe for one line of mrkdwn: no newlines, escaped, capped."""
    one_line = " ".join(text.split())
    return escape_slack(truncate(one_line, limit))


def format_duration(seconds: float) -> str:
    """`3725.0` -> `1h 2m 5s`; short and human."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    if minutes or hours:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def _session_label(session: SessionRef) -> str:
    return _inline(session.display_name, TITLE_LIMIT)


def headline(event: Event) -> str:
    """One plain sentence (mrkdwn-escaped) saying what happened."""
    data = event.data
    if event.type is EventType.API_UNAVAILABLE:
        return f":warning: Factory API unavailable: {_inline(str(data.get('reason', '')))}"
    if event.type is EventType.API_RECOVERED:
        return ":white_check_mark: Factory API reachable again"
    assert event.session is not None  # session events always carry their session
    name = _session_label(event.session)
    if event.type is EventType.DISCOVERED:
        return f":eyes: Now watching {name} ({_inline(event.session.status) or 'unknown'})"
    if event.type is EventType.STATUS_CHANGED:
        before, after = _inline(str(data.get("from"))), _inline(str(data.get("to")))
        if (before, after) == ("running", "idle"):
            return f":checkered_flag: {name} finished its run (running → idle)"
        return f":arrows_counterclockwise: {name} is now {after} (was {before})"
    if event.type is EventType.COMPLETED:
        took = format_duration(float(data.get("duration_s", 0)))
        return f":white_check_mark: {name} completed ({took} since it was created)"
    if event.type is EventType.MESSAGES_ADDED:
        added, total = data.get("added"), data.get("total")
        return f":speech_balloon: {name}: {added} new message(s), {total} in all"
    if event.type is EventType.ARCHIVED:
        return f":file_cabinet: {name} was archived"
    return f":wastebasket: {name} was deleted"


def _link(session: SessionRef) -> str:
    if not session.url:
        return _session_label(session)
    # The URL comes from our config template; escape it all the same so a
    # crafted session id cannot close the link early or add a second one.
    return f"<{escape_slack(session.url)}|{_session_label(session)}>"


def render_slack(event: Event, rule: str) -> SlackMessage:
    """A Slack message: headline, session facts, and a plain `text` fallback."""
    text = headline(event)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_LIMIT)}}
    ]
    session = event.session
    if session is not None:
        facts = [f"*Session:* {_link(session)}", f"*Status:* {_inline(session.status) or '?'}"]
        if session.title and session.name:
            facts.append(f"*Title:* {_inline(session.title, TITLE_LIMIT)}")
        facts.append(f"*ID:* `{_inline(session.id, 80)}`")
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(facts)}]}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"rule {_inline(rule, 80)} · {event.type}"}],
        }
    )
    return SlackMessage(text=text, blocks=tuple(blocks))


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def webhook_payload(event: Event, rule: str) -> dict[str, Any]:
    """The JSON document a webhook receives (DESIGN.md's delivery contract)."""
    session = event.session
    return {
        "type": str(event.type),
        "id": event.id,
        "occurred_at": _iso(event.occurred_at),
        "rule": rule,
        "session": None
        if session is None
        else {
            "id": session.id,
            "name": session.name,
            "title": session.title,
            "status": session.status,
            "labels": dict(session.labels),
            "url": session.url,
        },
        "data": dict(event.data),
    }


def render_webhook(event: Event, rule: str) -> WebhookMessage:
    """A webhook message whose `id` (the `webhook-id`) is the event id, equal on every retry."""
    body = json.dumps(webhook_payload(event, rule), ensure_ascii=False, separators=(",", ":"))
    return WebhookMessage(id=event.id, body=body.encode("utf-8"), occurred_at=event.occurred_at)


def render_for(kind: TargetKind, event: Event, rule: str) -> Message:
    """The message a target of `kind` sends for `event`."""
    if kind is TargetKind.WEBHOOK:
        return render_webhook(event, rule)
    return render_slack(event, rule)
