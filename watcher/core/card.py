"""The live Slack card of a session: one message kept current, and its thread's lines.

A card shows a session as the latest notification about it saw it: title,
status, what just happened, elapsed and active time, messages, tokens,
credits and model, and when a run ended, what that run took. Every later
notification replaces the card's content (`chat.update`) and adds one short
line to its thread. Everything that comes from a session (title, status,
model, the agent's answer) is escaped, so no title can mention `@channel`.

The delivery worker receives a `CardRenderer`, so a template layer can
replace how a card or a thread line looks without touching delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from watcher.core.message import SlackMessage
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.render import (
    SECTION_TEXT_LIMIT,
    TITLE_LIMIT,
    escape_slack,
    format_duration,
    format_number,
    headline,
    inline,
    truncate,
)

ANSWER_LIMIT = 1500  # the agent's last answer, shortened: the card stays a card
LINE_LIMIT = 600  # one thread line

# A session's status as the card shows it; an unknown status is shown as it is.
STATUS_EMOJI: Mapping[str, str] = {
    "running": ":large_green_circle:",
    "pending": ":hourglass_flowing_sand:",
    "idle": ":large_blue_circle:",
}
UNKNOWN_STATUS_EMOJI = ":grey_question:"
# Events after which the status alone says too little.
FINAL_STATES: Mapping[EventType, tuple[str, str]] = {
    EventType.ARCHIVED: (":file_cabinet:", "archived"),
    EventType.DELETED: (":wastebasket:", "deleted"),
}
RUN_ENDS = frozenset({EventType.FINISHED, EventType.INTERRUPTED, EventType.COMPLETED})


@dataclass(frozen=True, slots=True)
class EarlierCard:
    """The card this one replaces, because Slack refused to update it any more."""

    ts: str
    url: str | None  # its permalink, when Slack still gives one
    reason: str  # why it could not be updated (Slack's error name)


def status_label(event: Event) -> str:
    """The session's status with its emoji, as the card's first line shows it."""
    final = FINAL_STATES.get(event.type)
    if final is not None:
        return f"{final[0]} {final[1]}"
    status = event.session.status if event.session else ""
    emoji = STATUS_EMOJI.get(status, UNKNOWN_STATUS_EMOJI)
    return f"{emoji} {inline(status, 40) or 'unknown'}"


def _title(session: SessionRef) -> str:
    name = inline(session.display_name, TITLE_LIMIT)
    if not session.url:
        return f"*{name}*"
    # The URL comes from our config template; escaped all the same so a crafted
    # session id cannot close the link early or add a second one.
    return f"*<{escape_slack(session.url)}|{name}>*"


def _tokens(usage: Mapping[str, Any] | None) -> str | None:
    if not usage:
        return None
    parts = [
        f"{format_number(float(usage[key]))} {label}"
        for key, label in (("input", "in"), ("output", "out"), ("cache", "cache"))
        if isinstance(usage.get(key), int | float)
    ]
    return " / ".join(parts) or None


def _facts(event: Event, session: SessionRef) -> list[str]:
    """The figures of the session at the event's time, as mrkdwn fields."""
    fields: list[str] = []
    if session.created_at is not None:
        elapsed = (event.occurred_at - session.created_at).total_seconds()
        fields.append(f"*Elapsed*\n{format_duration(elapsed)}")
    if session.active_ms is not None:
        fields.append(f"*Active*\n{format_duration(session.active_ms / 1000)}")
    if session.message_count is not None:
        fields.append(f"*Messages*\n{format_number(session.message_count)}")
    usage = session.usage
    if usage is not None:
        tokens = _tokens(
            {
                "input": usage.input_tokens,
                "output": usage.output_tokens,
                "cache": usage.cache_creation_tokens + usage.cache_read_tokens,
            }
        )
        fields.append(f"*Tokens*\n{tokens}")
    if session.credits is not None:
        fields.append(f"*Credits*\n{format_number(session.credits)}")
    if session.model:
        fields.append(f"*Model*\n{inline(session.model, 80)}")
    return fields


def run_line(run: Mapping[str, Any]) -> str:
    """One line saying what a run took (the `run` summary of a finished event)."""
    parts: list[str] = []
    duration = run.get("duration_s")
    if isinstance(duration, int | float):
        parts.append(f"took {format_duration(duration)}")
    active = run.get("active_s")
    if isinstance(active, int | float):
        share = run.get("active_share")
        shown = f" ({round(share * 100)}% of it)" if isinstance(share, int | float) else ""
        parts.append(f"active {format_duration(active)}{shown}")
    tokens = run.get("tokens")
    shown_tokens = _tokens(tokens if isinstance(tokens, Mapping) else None)
    if shown_tokens:
        parts.append(f"tokens {shown_tokens}")
    credits = run.get("credits")
    if isinstance(credits, int | float):
        parts.append(f"{format_number(credits)} credits")
    added = run.get("messages_added")
    if isinstance(added, int):
        parts.append(f"{added} new message(s)")
    if run.get("partial"):
        parts.append("counted from when the watcher first saw it")
    return ", ".join(parts)


def _run(event: Event) -> Mapping[str, Any] | None:
    run = event.data.get("run")
    return run if event.type in RUN_ENDS and isinstance(run, Mapping) else None


def _answer(event: Event) -> str | None:
    """The agent's last answer (put in the data by `include_last_answer`), quoted and escaped."""
    answer = event.data.get("last_answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    lines = escape_slack(truncate(answer.strip(), ANSWER_LIMIT)).splitlines()
    return "*Last answer*\n" + "\n".join(f"> {line}" for line in lines)


def _section(text: str) -> dict[str, Any]:
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT_LIMIT)},
    }


def render_card(event: Event, rule: str, earlier: EarlierCard | None = None) -> SlackMessage:
    """The card of `event`'s session, as `event` leaves it; sessionless events have none."""
    session = event.session
    if session is None:
        raise ValueError(f"{event.type} belongs to no session: it has no card")
    status = status_label(event)
    what = headline(event)
    blocks: list[dict[str, Any]] = [_section(f"{status}  {_title(session)}"), _section(what)]
    facts = _facts(event, session)
    if facts:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in facts]})
    run = _run(event)
    summary = run_line(run) if run is not None else ""
    if summary:
        blocks.append(_section(f"*This run:* {summary}"))
    answer = _answer(event)
    if answer:
        blocks.append(_section(answer))
    footer = [f"`{inline(session.id, 80)}`", f"rule {inline(rule, 80)}", str(event.type)]
    if earlier is not None:
        footer.append(earlier_note(earlier))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(footer)}]})
    # The fallback text (notifications, screen readers) leads with what happened.
    text = f"{what} ({summary})" if summary else what
    return SlackMessage(text=truncate(text, SECTION_TEXT_LIMIT), blocks=tuple(blocks))


def earlier_note(earlier: EarlierCard) -> str:
    """`replaces an earlier card (reason)`, linked when Slack gave a permalink."""
    # A Slack permalink, escaped all the same: it ends up inside `<…|…>`.
    link = f"<{escape_slack(earlier.url)}|earlier card>" if earlier.url else "earlier card"
    return f"replaces an {link} ({inline(earlier.reason, 60)})"


def with_earlier(message: SlackMessage, earlier: EarlierCard | None) -> SlackMessage:
    """`message` (a card from a template) with the note of the card it replaces, if any."""
    if earlier is None:
        return message
    note = {"type": "context", "elements": [{"type": "mrkdwn", "text": earlier_note(earlier)}]}
    return SlackMessage(text=message.text, blocks=(*message.blocks, note))


def thread_line(event: Event) -> str:
    """One short line for the card's thread: when, and what happened (escaped)."""
    line = f"{event.occurred_at.strftime('%H:%M:%S')} UTC · {headline(event)}"
    run = _run(event)
    summary = run_line(run) if run is not None else ""
    if summary:
        line += f" · {summary}"
    return truncate(line, LINE_LIMIT)


def render_thread_reply(event: Event, rule: str) -> SlackMessage:
    """The thread reply of one notification: its line, as plain mrkdwn text."""
    del rule  # the same line whichever rule sent it; templates may use it
    return SlackMessage(text=thread_line(event))


@dataclass(frozen=True, slots=True)
class CardRenderer:
    """How cards and thread replies look; the delivery worker calls nothing else.

    `card(event, rule, earlier)` renders the whole card for the latest event;
    `reply(event, rule)` one thread reply. A template layer swaps either.
    `offload` says `card` may run a user's template: the shell then calls it off
    the event loop, so a slow template never stalls polls.
    """

    card: Callable[[Event, str, EarlierCard | None], SlackMessage] = render_card
    reply: Callable[[Event, str], SlackMessage] = render_thread_reply
    offload: bool = False
