"""The last answer at send time: fetched within its time limit, the client always returned."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.core.factories import event
from tests.daemon.offline import offline_settings
from watcher.core.model import EventType
from watcher.core.poll import FetchFailed, FetchFailureKind
from watcher.core.settings import Rule
from watcher.delivery.answers import LastAnswers
from watcher.poll.api import RequestBudget

ANSWER = {"role": "assistant", "phase": "final_answer", "content": "all done"}


class MessageSource:
    """Answers /messages with `reply` (or never, when `stall`); counts its loans."""

    def __init__(self, reply: list[Any] | FetchFailed, *, stall: bool = False) -> None:
        self.reply = reply
        self.stall = stall
        self.lent = 0

    async def fetch_messages(
        self, session_id: str, *, request_timeout: float
    ) -> list[Any] | FetchFailed:
        """The scripted reply, after an endless wait when stalling."""
        if self.stall:
            await anyio.sleep_forever()
        return self.reply

    def borrow(self) -> MessageSource:
        """Lend this source (as `Live.borrow` lends the client in force)."""
        self.lent += 1
        return self

    def give_back(self, source: object) -> None:
        """Take the loan back."""
        assert source is self
        self.lent -= 1


def answers(tmp_path: Path, source: MessageSource) -> LastAnswers:
    """LastAnswers over settings whose rule `done` asks for the last answer."""
    settings = replace(
        offline_settings(tmp_path, "s1"),
        rules=(Rule(name="done", on=("session.finished",), notify=(), include_last_answer=True),),
    )
    return LastAnswers(
        settings=lambda: settings,
        source=source.borrow,  # type: ignore[arg-type]
        give_back=source.give_back,
        budget=RequestBudget(1000.0),
        redact=lambda text: text,
        timeout=timedelta(milliseconds=50),
    )


@pytest.mark.parametrize(
    ("case", "source", "expected"),
    [
        ("answered", MessageSource([ANSWER]), "all done"),
        ("failed", MessageSource(FetchFailed(FetchFailureKind.RETRYABLE, "HTTP 503")), None),
        ("no reply in time", MessageSource([], stall=True), None),
    ],
)
@pytest.mark.anyio
async def test_the_client_is_given_back_whatever_the_fetch_did(
    tmp_path: Path, case: str, source: MessageSource, expected: str | None
) -> None:
    """Answered, failed or timed out: the loan of the client is returned (a reload may close it)."""
    found = await answers(tmp_path, source).add(event(EventType.FINISHED), "done")
    assert found.data.get("last_answer") == expected, case
    assert source.lent == 0
