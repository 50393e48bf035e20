"""The last answer: for a rule with `include_last_answer`, the session's latest agent
message is fetched when its notification is sent, and added to the event's data.

It owns the fetch (bounded by `timeout`, the budget wait included, so a crowded
budget never holds a notification) and a small cache by event id, so a row for
a second target, or a retry, reuses the answer instead of asking again. When
the API does not answer in time, the notification goes out without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import anyio

from watcher.core.answer import latest_answer
from watcher.core.model import Event
from watcher.core.poll import FetchFailed
from watcher.core.settings import Settings
from watcher.core.template import rule_named
from watcher.poll.api import AnswerSource, RequestBudget, SessionSource

log = logging.getLogger("watcher.delivery.answers")
ANSWER_TIMEOUT = timedelta(seconds=3)  # how long a notification waits for the last answer
ANSWER_CACHE = 256


class LastAnswers:
    """Adds the session's last answer to events whose rule asks for it."""

    def __init__(
        self,
        *,
        settings: Callable[[], Settings],
        source: Callable[[], SessionSource],
        give_back: Callable[[SessionSource], None] = lambda _source: None,
        budget: RequestBudget,
        redact: Callable[[str], str],
        timeout: timedelta = ANSWER_TIMEOUT,
    ) -> None:
        self._settings = settings
        # `source()` lends the client in force and `give_back` returns it: a reload
        # closes the client it replaced only once no fetch is using it.
        self._source = source
        self._give_back = give_back
        self._budget = budget
        self._redact = redact
        self.timeout = timeout
        self._answers: dict[str, str] = {}  # by event id, oldest first

    async def add(self, event: Event, rule_name: str) -> Event:
        """`event` with `data["last_answer"]` when its rule asks for it and the API answers
        within `timeout`; otherwise `event` as it was (the notification goes out anyway).
        """
        rule = rule_named(self._settings(), rule_name)
        if rule is None or not rule.include_last_answer or event.session is None:
            return event
        if "last_answer" in event.data:
            return event
        answer = self._answers.get(event.id)
        if answer is None:
            answer = await self.fetch(event.session.id)
            if answer is None:
                return event
            if len(self._answers) >= ANSWER_CACHE:
                self._answers.pop(next(iter(self._answers)))
            self._answers[event.id] = answer
        return replace(event, data={**event.data, "last_answer": answer})

    async def fetch(self, session_id: str) -> str | None:
        """The last answer of `session_id`, or None (no reply in time, or a failure)."""
        source = self._source()
        try:
            if not isinstance(source, AnswerSource):
                return None
            result = await self._ask(source, session_id)
        finally:
            self._give_back(source)
        limit = self.timeout.total_seconds()
        if result is None:
            log.warning("no last answer for %s: no reply within %gs", session_id, limit)
            return None
        if isinstance(result, FetchFailed):
            if result.status == 429:
                self._budget.throttled(result.retry_after)
            log.warning("no last answer for %s: %s", session_id, self._redact(result.reason))
            return None
        return latest_answer(result)

    async def _ask(self, source: AnswerSource, session_id: str) -> list[Any] | FetchFailed | None:
        """The session's messages, a failure, or None when no reply came within `timeout`
        (the wait for a budget token counts: a crowded budget must not hold a notification).
        """
        limit = self.timeout.total_seconds()
        with anyio.move_on_after(limit):
            await self._budget.acquire()
            return await source.fetch_messages(session_id, request_timeout=limit)
        return None
