"""Rendering events into finished messages: Slack text and blocks, webhook JSON bodies."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from watcher.core.captured import EventBodyError, event_from_body
from watcher.core.message import Message, SlackMessage, WebhookMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.settings import TargetKind

# Slack limits: section text 3000 chars, message text 40000; titles are capped
# well below so one session cannot crowd out the rest of the message.
SECTION_TEXT_LIMIT = 3000
TITLE_LIMIT = 150
FIELD_LIMIT = 300
ELLIPSIS = "…"
# A message has at most 50 blocks: the headline, 40 sessions, a count of the rest, the rule.
DIGEST_GROUPS_SHOWN = 40
FALLBACK_TEXT_LIMIT = 4000  # the plain `text` of a digest; the blocks carry the listing


def escape_slack(text: str) -> str:
    """Escape the three characters Slack treats as control syntax.

    With `<` and `>` escaped, untrusted text cannot form `<!channel>`,
    `<@U123>`, `<!subteam^…>` or `<https://evil|innocent>`.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """Cap `text` at `limit` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def inline(text: str, limit: int = FIELD_LIMIT) -> str:
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


def short_duration(seconds: float) -> str:
    """`900` -> `15m`, `5400` -> `1h 30m`: like `format_duration` without zero tails."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return " ".join(parts) or "0s"


USAGE_UNITS = {
    "factory_credits": "credits",
    "total_tokens": "tokens in all",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
}


def format_number(value: float) -> str:
    """`100.0` -> `100`, `1000000` -> `1,000,000`, `101.5` -> `101.5`."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0")


def _number(value: object) -> str:
    """A number as `format_number` writes it; anything else as inert text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return inline(str(value))
    return format_number(value)


def _lifecycle_headline(event: Event, name: str) -> str | None:
    """Headlines of the semantic events; None for other types."""
    data = event.data
    kind = event.type
    resolved = bool(data.get("resolved"))
    lasted = short_duration(float(data.get("lasted_s", 0) or 0))
    held = short_duration(float(data.get("for_s", 0) or 0))
    reminder = " (reminder)" if data.get("reminder") else ""
    if kind is EventType.STARTED:
        return f":arrow_forward: {name} started running"
    if kind is EventType.FINISHED:
        unseen = " (the whole run happened between two polls)" if data.get("between_polls") else ""
        return f":checkered_flag: {name} finished{unseen}"
    if kind is EventType.INTERRUPTED:
        return f":octagonal_sign: {name} was interrupted"
    if kind is EventType.WAITING:
        if resolved:
            return f":white_check_mark: {name} is no longer waiting (waited {lasted})"
        return f":hourglass: {name} has been waiting for {held}{reminder}"
    if kind is EventType.STUCK:
        if resolved:
            return f":white_check_mark: {name} is making progress again (stuck for {lasted})"
        return f":warning: {name} has made no progress for {held}{reminder}"
    if kind is EventType.LONG_RUNNING:
        if resolved:
            return f":white_check_mark: {name} is no longer running (ran for {lasted})"
        return f":stopwatch: {name} has been running for {held}{reminder}"
    if kind is EventType.USAGE_CROSSED:
        counter = str(data.get("counter", ""))
        unit = USAGE_UNITS.get(counter, inline(counter))
        return (
            f":moneybag: {name} crossed {_number(data.get('threshold'))} {unit} "
            f"(now {_number(data.get('value'))})"
        )
    return None


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One held notification a digest lists: the event as it happened and its rule."""

    event: Event
    rule: str


def _digest_items(event: Event) -> list[DigestItem]:
    """The held notifications a digest lists, read back from its data (each item is the
    webhook body it would have had); an unreadable item is left out, not fatal."""
    items = event.data.get("items")
    out: list[DigestItem] = []
    for item in items if isinstance(items, list) else []:
        try:
            held = event_from_body(item)
        except EventBodyError:
            continue
        rule = item.get("rule") if isinstance(item, dict) else None
        out.append(DigestItem(held, rule if isinstance(rule, str) else ""))
    return out


def digest_sessions(event: Event) -> list[SessionRef]:
    """The sessions a digest's held notifications are about, each once, in order."""
    seen: dict[str, SessionRef] = {}
    for item in _digest_items(event):
        session = item.event.session
        if session is not None:
            seen.setdefault(session.id, session)
    return list(seen.values())


def _digest_headline(event: Event) -> str:
    window = inline(str(event.data.get("window", "")))
    count = event.data.get("count", 0)
    return f":zzz: Quiet hours {window} are over: {count} notification(s) held"


DIGEST_GROUP_LINES = 5  # per session; beyond that, a count says how many more


def digest_groups(event: Event, *, linked: bool = False) -> list[list[str]]:
    """The digest's listing, one group of lines per session in the order each first
    appears: a heading with the session's count, then a short line per held
    notification; a session with many shows its first few and how many more.

    `linked` makes each heading a link to its session (the blocks); the plain
    `text` fallback, like every message's, names the session without one.
    """
    groups: dict[str, list[DigestItem]] = {}
    for item in _digest_items(event):
        key = item.event.session.id if item.event.session else ""
        groups.setdefault(key, []).append(item)
    listing: list[list[str]] = []
    for members in groups.values():
        session = members[0].event.session
        if session is None:
            title = "Factory watcher"
        else:
            title = _link(session) if linked else _session_label(session)
        lines = [f"*{title}* ({len(members)})"]
        for item in members[:DIGEST_GROUP_LINES]:
            at = item.event.occurred_at.strftime("%H:%M")
            lines.append(f"• {at} UTC {headline(item.event)}")
        if len(members) > DIGEST_GROUP_LINES:
            lines.append(f"• … and {len(members) - DIGEST_GROUP_LINES} more")
        listing.append(lines)
    return listing


def digest_lines(event: Event) -> list[str]:
    """The digest's listing as plain lines (`digest_groups` flattened)."""
    return [line for group in digest_groups(event) for line in group]


def _session_label(session: SessionRef) -> str:
    return inline(session.display_name, TITLE_LIMIT)


def headline(event: Event) -> str:
    """One plain sentence (mrkdwn-escaped) saying what happened."""
    data = event.data
    if event.type is EventType.API_UNAVAILABLE:
        return f":warning: Factory API unavailable: {inline(str(data.get('reason', '')))}"
    if event.type is EventType.API_RECOVERED:
        return ":white_check_mark: Factory API reachable again"
    if event.type is EventType.DIGEST:
        return _digest_headline(event)
    if event.type is EventType.REPORT:
        from watcher.core.reportview import report_headline  # noqa: PLC0415 (it imports us)

        return report_headline(event.data)
    if event.session is None:
        return f"{event.type}"
    name = _session_label(event.session)
    semantic = _lifecycle_headline(event, name)
    if semantic is not None:
        return semantic
    if event.type is EventType.DISCOVERED:
        return f":eyes: Now watching {name} ({inline(event.session.status) or 'unknown'})"
    if event.type is EventType.STATUS_CHANGED:
        before, after = inline(str(data.get("from"))), inline(str(data.get("to")))
        if (before, after) == ("running", "idle"):
            # Finished or interrupted looks the same here; session.finished tells them apart.
            return f":pause_button: {name} stopped running (running → idle)"
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


def answer_section(event: Event) -> dict[str, Any] | None:
    """The agent's last answer (`include_last_answer`) as a quoted, escaped section."""
    answer = event.data.get("last_answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    quoted = "\n".join(f"> {escape_slack(line)}" for line in answer.strip().splitlines())
    text = truncate(f"*Last answer:*\n{quoted}", SECTION_TEXT_LIMIT)
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def render_slack(event: Event, rule: str) -> SlackMessage:
    """A Slack message: headline, session facts, and a plain `text` fallback."""
    if event.type is EventType.REPORT:
        from watcher.core.reportview import render_report_slack  # noqa: PLC0415 (it imports us)

        return render_report_slack(event.data, rule, str(event.type))
    text = headline(event)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_LIMIT)}}
    ]
    answer = answer_section(event)
    if answer is not None:
        blocks.append(answer)
    if event.type is EventType.DIGEST:
        groups = digest_groups(event)
        for group in digest_groups(event, linked=True)[:DIGEST_GROUPS_SHOWN]:
            listing = truncate("\n".join(group), SECTION_TEXT_LIMIT)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listing}})
        if len(groups) > DIGEST_GROUPS_SHOWN:
            # Slack refuses longer messages; the webhook body still lists every event.
            more = len(groups) - DIGEST_GROUPS_SHOWN
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"… and {more} more sessions"}],
                }
            )
        lines = [line for group in groups for line in group]
        text = truncate("\n".join([text, *lines]), FALLBACK_TEXT_LIMIT)
    session = event.session
    if session is not None:
        facts = [f"*Session:* {_link(session)}", f"*Status:* {inline(session.status) or '?'}"]
        if session.title and session.name:
            facts.append(f"*Title:* {inline(session.title, TITLE_LIMIT)}")
        facts.append(f"*ID:* `{inline(session.id, 80)}`")
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "  ·  ".join(facts)}]}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"rule {inline(rule, 80)} · {event.type}"}],
        }
    )
    return SlackMessage(text=text, blocks=tuple(blocks))


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


WEBHOOK_VERSION = 1  # docs/webhook-event.schema.json; fields may be added, never changed
REPORT_BODY_TYPE = "report"  # a scheduled report's body `type` (its `data`: the document)


def body_type(event: Event) -> str:
    """The `type` of `event`'s webhook body: the event type, `report` for a report."""
    return REPORT_BODY_TYPE if event.type is EventType.REPORT else str(event.type)


def _session_body(session: SessionRef | None) -> dict[str, Any] | None:
    if session is None:
        return None
    body: dict[str, Any] = {
        "id": session.id,
        "name": session.name,
        "title": session.title,
        "status": session.status,
        "labels": dict(session.labels),
        "url": session.url,
    }
    # What the API said of the session at the event, where it said it (v1 additions).
    if session.created_at is not None:
        body["created_at"] = _iso(session.created_at)
    if session.message_count is not None:
        body["message_count"] = session.message_count
    if session.active_ms is not None:
        body["active_s"] = session.active_ms / 1000
    if session.model is not None:
        body["model"] = session.model
    if session.usage is not None:
        body["usage"] = asdict(session.usage)
    return body


def webhook_payload(event: Event, rule: str) -> dict[str, Any]:
    """The JSON document a webhook receives for one event (webhook events v1).

    `sequence` increases strictly with each event of the same session (the
    watcher's own events count as one more stream), so a receiver can drop
    a stale or reordered update by keeping the highest it has seen.
    """
    return {
        "version": WEBHOOK_VERSION,
        "type": body_type(event),
        "id": event.id,
        "sequence": event.sequence,
        "occurred_at": _iso(event.occurred_at),
        "rule": rule,
        "session": _session_body(event.session),
        "data": dict(event.data),
    }


def digest_payload(event: Event, rule: str) -> dict[str, Any]:
    """The one webhook body of a quiet-hours digest: `type: "digest"` and every held event.

    Each listed event has the shape of a body of its own, with the sequence it
    was given when it happened, so a receiver can hand them to its usual handler.
    """
    data = event.data
    return {
        "version": WEBHOOK_VERSION,
        "type": "digest",
        "id": event.id,
        "sequence": event.sequence,
        "occurred_at": _iso(event.occurred_at),
        "rule": rule,
        "session": None,
        "data": {"window": data.get("window"), "count": data.get("count")},
        "events": [_digest_item_body(item) for item in _digest_items(event)],
    }


def _digest_item_body(item: DigestItem) -> dict[str, Any]:
    return webhook_payload(item.event, item.rule)


def render_webhook(event: Event, rule: str) -> WebhookMessage:
    """A webhook message whose `id` (the `webhook-id`) is the event id, equal on every retry."""
    payload = (
        digest_payload(event, rule)
        if event.type is EventType.DIGEST
        else webhook_payload(event, rule)
    )
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return WebhookMessage(id=event.id, body=body.encode("utf-8"), occurred_at=event.occurred_at)


def render_for(kind: TargetKind, event: Event, rule: str) -> Message:
    """The message a target of `kind` sends for `event`."""
    if kind is TargetKind.WEBHOOK:
        return render_webhook(event, rule)
    return render_slack(event, rule)
