"""Send-time rendering: a row's message and card are built when it is sent, from the
settings in force then (a reload's new template applies to rows already queued).

A target's template (the rule's or the target's) shapes the message; when it
fails on data no sample had, the built-in message goes out instead and a
warning says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from watcher.core.card import CardRenderer, EarlierCard
from watcher.core.message import Message, SlackMessage
from watcher.core.model import Event
from watcher.core.settings import Settings, Target
from watcher.core.template import render_card_for, render_message
from watcher.ops.logs import context

log = logging.getLogger("watcher.delivery.rendering")


def note_fallback(problem: str | None, what: str, target: Target, event: Event, rule: str) -> None:
    """Log a template that failed at send time (the built-in `what` went out instead)."""
    if problem is None:
        return
    log.warning(
        "template for %s (rule %s) failed; the %s is built-in instead: %s",
        target.name,
        rule,
        what,
        problem,
        extra=context(target=target.name, rule=rule, event_id=event.id),
    )


class SendTimeRenderer:
    """Messages and cards from the templates of the settings in force at send time."""

    def __init__(self, settings: Callable[[], Settings]) -> None:
        self._settings = settings

    def message(self, target: Target, event: Event, rule: str) -> Message:
        """The message for `target`: its template's, or built-in if it has none or it fails."""
        message, problem = render_message(self._settings(), target, event, rule)
        note_fallback(problem, "message", target, event, rule)
        return message

    def cards(self, target: Target) -> CardRenderer:
        """How `target`'s cards look: its template's (rule's or target's), else built-in."""

        def card(event: Event, rule: str, earlier: EarlierCard | None) -> SlackMessage:
            message, problem = render_card_for(self._settings(), target, event, rule, earlier)
            note_fallback(problem, "card", target, event, rule)
            return message

        return CardRenderer(card=card)
