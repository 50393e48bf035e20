"""The real API client, noting what each poll came back as (for tests of the hot path)."""

from __future__ import annotations

from watcher.core.discovery import ListPage
from watcher.core.poll import Answer, FetchFailed, NotFound
from watcher.poll.api import FactoryClient


class AnswerLog:
    """The real API client, noting what each poll came back as."""

    def __init__(self, inner: FactoryClient) -> None:
        self.inner = inner
        self.answers: list[str] = []
        self.vanish_once = False  # answer the next poll with a 404, as a deleted session would

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Ask the real client (or answer 404 once, when told to), and note the answer."""
        answer: Answer
        if self.vanish_once:
            self.vanish_once = False
            answer = NotFound()
        else:
            answer = await self.inner.fetch_session(session_id, known=known)
        self.answers.append(type(answer).__name__)
        return answer

    def forget(self, session_id: str) -> None:
        """Forget in the real client."""
        self.inner.forget(session_id)

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """The real client's page."""
        return await self.inner.list_sessions(cursor)

    async def aclose(self) -> None:
        """Close the real client."""
        await self.inner.aclose()
