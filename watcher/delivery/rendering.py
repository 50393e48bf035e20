"""Send-time rendering: a row's message and card are built when it is sent, from the
settings in force then (a reload's new template applies to rows already queued).

A target's template (the rule's or the target's) shapes the message; when it
fails on data no sample had, or does more work than a template may, the
built-in message goes out instead and a warning says why.

A template runs within `RENDER_TIME_LIMIT` (as well as the sandbox's bounds on
steps and output): the clock is asked at every step of the render, which ends
as soon as the time is up. A message's template runs in a worker thread, so a
slow one never stalls polls or other lanes; a message with no template is
built right here, with no thread hop. A card is rendered the same way: inside
the live-card protocol, in a worker thread (`CardRenderer.offload`), within the
same time limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from watcher.core.card import CardRenderer, EarlierCard
from watcher.core.message import Message, SlackMessage
from watcher.core.model import Event
from watcher.core.render import render_for
from watcher.core.sandbox import RenderLimits, within
from watcher.core.settings import Settings, Target
from watcher.core.template import render_card_for, render_message, template_for
from watcher.ops.logs import context

log = logging.getLogger("watcher.delivery.rendering")

RENDER_TIME_LIMIT = 2.0  # seconds one message's template may take at send time


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
    """Messages and cards from the templates of the settings in force at send time.

    `clock` (monotonic seconds) times each render against `time_limit`.
    """

    def __init__(
        self,
        settings: Callable[[], Settings],
        *,
        clock: Callable[[], float] = time.monotonic,
        time_limit: float = RENDER_TIME_LIMIT,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._time_limit = time_limit

    def limits(self) -> RenderLimits:
        """The bounds of one render starting now: the sandbox's, and the time limit."""
        return within(self._time_limit, self._clock)

    async def message(self, target: Target, event: Event, rule: str) -> Message:
        """The message for `target`: its template's, or built-in if it has none or it fails
        (an error, too much work, or past the time limit).
        """
        settings = self._settings()
        if template_for(settings, target, rule, event.type) is None:
            return render_for(target.kind, event, rule)

        def render() -> tuple[Message, str | None]:
            # The time limit starts when the thread does, not while it waits for one.
            return render_message(settings, target, event, rule, self.limits())

        message, problem = await anyio.to_thread.run_sync(render)
        note_fallback(problem, "message", target, event, rule)
        return message

    def cards(self, target: Target) -> CardRenderer:
        """How `target`'s cards look: its template's (rule's or target's), else built-in."""

        def card(event: Event, rule: str, earlier: EarlierCard | None) -> SlackMessage:
            settings = self._settings()
            message, problem = render_card_for(
                settings, target, event, rule, earlier, self.limits()
            )
            note_fallback(problem, "card", target, event, rule)
            return message

        return CardRenderer(card=card, offload=True)
