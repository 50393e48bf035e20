"""`render RULE`: the message a rule would send for an event, printed; nothing is sent.

The event is a captured webhook body (`--event FILE.json`, read with a size
cap and every way it can be wrong named), or a sample of the rule's first
event type. Slack messages print as the Web API gets them (text and blocks),
webhook bodies as sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from watcher.commands.exits import EX_FAILURE, EX_OK, EX_USAGE
from watcher.core.captured import EventBodyError, event_from_body
from watcher.core.card import render_thread_reply
from watcher.core.message import SlackMessage
from watcher.core.model import Event, EventType
from watcher.core.render import render_for
from watcher.core.samples import sample_event, with_answer
from watcher.core.settings import Rule, Settings, SlackTarget
from watcher.core.template import (
    TemplateError,
    render_card_for,
    render_template,
    rule_named,
    template_for,
)

MAX_EVENT_FILE = 1 << 20


def read_event(path: Path, err: TextIO) -> Event | None:
    """The event in a captured webhook body, or None after saying what is wrong."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_EVENT_FILE + 1)
    except OSError as error:
        print(f"factory-watcher: cannot read {path}: {error.strerror or error}", file=err)
        return None
    if len(raw) > MAX_EVENT_FILE:
        print(f"factory-watcher: {path}: larger than 1 MiB; not an event", file=err)
        return None
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        print(f"factory-watcher: {path}: not UTF-8 text", file=err)
        return None
    except json.JSONDecodeError as error:
        print(
            f"factory-watcher: {path}:{error.lineno}: not JSON: {error.msg} (column {error.colno})",
            file=err,
        )
        return None
    except ValueError as error:  # e.g. an integer too long to convert
        print(f"factory-watcher: {path}: not usable JSON: {error}", file=err)
        return None
    try:
        return event_from_body(body)
    except EventBodyError as error:
        print(f"factory-watcher: {path}: {error}", file=err)
        return None


def render_command(settings: Settings, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`render RULE`: the message the rule's target would get, on stdout; nothing is sent.

    For a Slack target that keeps live cards, that is the session's card and
    the line its thread gets.
    """
    rule = rule_named(settings, args.rule)
    if rule is None:
        names = ", ".join(r.name for r in settings.rules) or "none"
        print(f"factory-watcher: unknown rule {args.rule!r} (rules: {names})", file=err)
        return EX_USAGE
    name = args.target or rule.notify[0]
    if name not in rule.notify:
        print(
            f"factory-watcher: rule {rule.name!r} does not notify {name!r} "
            f"(it notifies: {', '.join(rule.notify)})",
            file=err,
        )
        return EX_USAGE
    target = settings.targets[name]
    event = _render_event(rule, args, err)
    if event is None:
        return EX_USAGE
    if args.target is None and len(rule.notify) > 1:
        others = ", ".join(rule.notify[1:])
        print(f"factory-watcher: rendered for {name}; --target picks {others}", file=err)
    template = template_for(settings, target, rule.name, event.type)
    try:
        if template is None:
            message = render_for(target.kind, event, rule.name)
        else:
            message = render_template(template, event, rule.name, rule)
    except TemplateError as error:
        print(
            f"factory-watcher: the template fails on this event: {error}\n"
            "(the daemon would send the built-in message instead)",
            file=err,
        )
        return EX_FAILURE
    if isinstance(target, SlackTarget) and target.card and event.session is not None:
        card, _ = render_card_for(settings, target, event, rule.name)
        shown: dict[str, Any] = {"card": _slack_json(card)}
        if target.thread:
            shown["thread_reply"] = _slack_json(render_thread_reply(event, rule.name))
        print(json.dumps(shown, ensure_ascii=False, indent=2), file=out)
    elif isinstance(message, SlackMessage):
        print(json.dumps(_slack_json(message), ensure_ascii=False, indent=2), file=out)
    else:
        print(message.body.decode("utf-8"), file=out)
    return EX_OK


def _render_event(rule: Rule, args: argparse.Namespace, err: TextIO) -> Event | None:
    """The event `render` shows: the one in `--event`, or a sample of the rule's first type."""
    if args.event is None:
        event = sample_event(EventType(rule.on[0]))
        return with_answer(event) if rule.include_last_answer else event
    read = read_event(args.event, err)
    if read is not None and str(read.type) not in rule.on and read.type is not EventType.DIGEST:
        print(
            f"factory-watcher: note: rule {rule.name!r} does not listen to {read.type} "
            f"(it listens to: {', '.join(rule.on)})",
            file=err,
        )
    return read


def _slack_json(message: SlackMessage) -> dict[str, Any]:
    """A Slack message as the Web API gets it: text, and blocks when there are any."""
    shown: dict[str, Any] = {"text": message.text}
    if message.blocks:
        shown["blocks"] = [dict(b) for b in message.blocks]
    return shown
