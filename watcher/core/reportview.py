"""A report document (watcher.core.report) shown to people: Slack blocks, plain text.

Both read only the document, the same one a webhook's `data` carries, so
`report NAME` prints what the scheduled run sends. Slack gets one message: a
headline section, one section per kind of session with at most
`LISTED_PER_SECTION` lines ending in "… and N more", the longest runs, the
use, and the groups; every text within Slack's limits and every name escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.core.message import SlackMessage
from watcher.core.render import (
    SECTION_TEXT_LIMIT,
    TITLE_LIMIT,
    escape_slack,
    format_number,
    inline,
    short_duration,
    truncate,
)

LISTED_PER_SECTION = 10
FALLBACK_TEXT_LIMIT = 3000  # the plain `text` of the message; the blocks carry the rest
FALLBACK_NAMES = 5  # sessions named per kind in the fallback text
TITLES = {
    "started": "Started",
    "finished": "Finished",
    "interrupted": "Interrupted",
    "completed": "Completed",
    "archived": "Archived",
    "deleted": "Deleted",
    "stuck": "Stuck now",
    "waiting": "Waiting now",
}
# Headline order: what people act on first.
SUMMARY = ("finished", "interrupted", "stuck", "waiting", "started", "archived", "deleted")


def _zone(doc: Mapping[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(str(doc.get("window", {}).get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _when(value: object, zone: ZoneInfo) -> str:
    if not isinstance(value, str):
        return "?"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return "?"
    return moment.astimezone(zone).strftime("%a %d %b %H:%M")


def window_text(doc: Mapping[str, Any]) -> str:
    """`Thu 04 Dec 09:00 - Fri 05 Dec 09:00 (Europe/Berlin)`."""
    window = doc.get("window", {})
    zone = _zone(doc)
    return f"{_when(window.get('start'), zone)} - {_when(window.get('end'), zone)} ({zone.key})"


def summary(doc: Mapping[str, Any]) -> str:
    """The counts in one plain phrase, or `nothing happened`."""
    if doc.get("empty"):
        return "nothing happened"
    return _counts_phrase(doc) or "no session changed; some work was done"


def _counts_phrase(part: Mapping[str, Any]) -> str:
    """`2 finished, 1 stuck, 3.5 credits` from the counts and credits of a document or group."""
    counts = part.get("counts", {})
    parts = [f"{counts[k]} {TITLES[k].lower()}" for k in SUMMARY if counts.get(k)]
    credits = part.get("credits")
    if isinstance(credits, int | float) and credits:
        parts.append(f"{format_number(credits)} credits")
    return ", ".join(parts)


def report_headline(doc: Mapping[str, Any]) -> str:
    """One mrkdwn-escaped line: the report's name, window and counts."""
    name = inline(str(doc.get("report", "")), 80)
    return f":bar_chart: *{name}*: {escape_slack(summary(doc))} · {escape_slack(window_text(doc))}"


def _session_text(item: Mapping[str, Any], linked: bool) -> str:
    name = str(item.get("name") or item.get("id") or "?")
    url = item.get("url")
    if linked:
        label = inline(name, TITLE_LIMIT)
        return f"<{escape_slack(str(url))}|{label}>" if url else label
    return f"{name} ({url})" if url else name


def _kind_line(kind: str, item: Mapping[str, Any], zone: ZoneInfo, linked: bool) -> str:
    text = _session_text(item, linked)
    times = item.get("times")
    if isinstance(times, int) and times > 1:
        text += f" x{times}"
    if kind in ("stuck", "waiting") and item.get("since"):
        text += f" since {_when(item.get('since'), zone)}"
    return text


def _run_line(run: Mapping[str, Any], linked: bool) -> str:
    took = short_duration(float(run.get("duration_s") or 0))
    outcome = str(run.get("outcome", ""))
    return f"{_session_text(run.get('session', {}), linked)}: {took} ({outcome})"


def _use_lines(doc: Mapping[str, Any]) -> list[str]:
    lines = []
    active = doc.get("active_s")
    if isinstance(active, int | float) and active:
        lines.append(f"Active time: {short_duration(active)}")
    tokens = doc.get("tokens") or {}
    if tokens.get("total"):
        lines.append(
            f"Tokens: {format_number(tokens['total'])} (input {format_number(tokens['input'])},"
            f" output {format_number(tokens['output'])}, cache {format_number(tokens['cache'])})"
        )
    credits = doc.get("credits")
    if isinstance(credits, int | float):
        lines.append(f"Credits: {format_number(credits)}")
    return lines


def _group_line(group: Mapping[str, Any]) -> str:
    value = group.get("value")
    label = "(no label)" if value is None else str(value)
    return f"{label}: {_counts_phrase(group) or 'no change'}"


def sections(doc: Mapping[str, Any], *, linked: bool) -> list[tuple[str, list[str], int]]:
    """(title, lines, how many more not listed) of each part with something to say."""
    zone = _zone(doc)
    out: list[tuple[str, list[str], int]] = []
    listed = doc.get("sessions", {})
    counts = doc.get("counts", {})
    for kind, title in TITLES.items():
        items: Sequence[Mapping[str, Any]] = listed.get(kind, [])
        total = int(counts.get(kind, len(items)))
        if not total:
            continue
        lines = [_kind_line(kind, item, zone, linked) for item in items]
        out.append((f"{title} ({total})", lines, total - len(lines)))
    runs = doc.get("longest_runs", [])
    if runs:
        out.append(("Longest runs", [_run_line(r, linked) for r in runs], 0))
    use = _use_lines(doc)
    if use:
        out.append(("Use", use, 0))
    top = [
        f"{_session_text(t.get('session', {}), linked)}: {format_number(t.get('credits') or 0)}"
        for t in doc.get("top_credits", [])
    ]
    if top:
        out.append(("Most credits", top, 0))
    groups = doc.get("groups") or []
    if groups:
        label = str(doc.get("group_by"))
        out.append((f"By {label}", [_group_line(g) for g in groups], 0))
    return out


def _section_text(title: str, lines: list[str], more: int, limit: int) -> str:
    """`*title*` and bullet lines, at most LISTED_PER_SECTION and `limit` characters."""
    head = f"*{escape_slack(title)}*"
    shown: list[str] = []
    hidden = more
    for n, line in enumerate(lines):
        rest = len(lines) - n + more
        tail = f"\n• … and {rest} more"
        candidate = "\n".join([head, *shown, f"• {line}"])
        if n >= LISTED_PER_SECTION or len(candidate) + len(tail) > limit:
            hidden = rest
            break
        shown.append(f"• {line}")
    text = "\n".join([head, *shown])
    if hidden:
        text += f"\n• … and {hidden} more"
    return truncate(text, limit)


def render_report_slack(doc: Mapping[str, Any], rule: str, event_type: str) -> SlackMessage:
    """One Slack message for a report: sections, and a plain fallback within limits."""
    head = report_headline(doc)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": truncate(head, SECTION_TEXT_LIMIT)}}
    ]
    fallback = [head]
    for title, lines, more in sections(doc, linked=True):
        text = _section_text(title, lines, more, SECTION_TEXT_LIMIT)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    for title, lines, more in sections(doc, linked=False):
        if not title.startswith(tuple(TITLES.values())):
            continue
        rest = max(0, len(lines) - FALLBACK_NAMES) + more
        line = f"{title}: {', '.join(lines[:FALLBACK_NAMES])}"
        fallback.append(escape_slack(line + (f" … and {rest} more" if rest else "")))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"report {inline(str(doc.get('report', rule)), 80)} · {event_type}",
                }
            ],
        }
    )
    return SlackMessage(
        text=truncate("\n".join(fallback), FALLBACK_TEXT_LIMIT), blocks=tuple(blocks)
    )


def report_text(doc: Mapping[str, Any]) -> str:
    """The report as plain text for a terminal (`report NAME`), every listed session shown."""
    name = str(doc.get("report", ""))
    lines = [f"Report {name}: {summary(doc)}", f"Window: {window_text(doc)}"]
    for title, body, more in sections(doc, linked=False):
        lines.append("")
        lines.append(f"{title}:")
        lines.extend(f"  - {line}" for line in body)
        if more:
            lines.append(f"  - … and {more} more")
    return "\n".join(lines) + "\n"
