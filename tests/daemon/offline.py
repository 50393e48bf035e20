"""A watcher wired to a source that is never asked: its parts, tested on their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from watcher.core.discovery import ListPage
from watcher.core.poll import Answer, FetchFailed, NotFound
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, PollSettings, Settings, WatchedSession
from watcher.daemon import Watcher
from watcher.ops.systemd import SystemdNotifier

API_KEY = "fk-offline-0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class IdleSource:
    """A session source for parts that must not reach the API: every session is gone."""

    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.closed = False

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Every session is gone."""
        return NotFound()

    def forget(self, session_id: str) -> None:
        """Remember what was forgotten."""
        self.forgotten.append(session_id)

    async def list_sessions(self, cursor: str | None) -> ListPage | FetchFailed:
        """An empty list."""
        return ListPage((), None)

    async def aclose(self) -> None:
        """Nothing to close."""
        self.closed = True


def offline_settings(tmp_path: Path, *ids: str) -> Settings:
    """Settings watching `ids`, with state under `tmp_path`."""
    return Settings(
        factory=FactorySettings(api_key=Secret(API_KEY), max_requests_per_second=1000.0),
        state_path=tmp_path / "state.db",
        poll=PollSettings(interval=timedelta(seconds=30), jitter=0.0),
        sessions=tuple(WatchedSession(id=i) for i in ids),
    )


def offline_watcher(settings: Settings, now: list[datetime], **kwargs: Any) -> Watcher:
    """A watcher over `settings` whose clock reads `now[0]`, with no API and no systemd."""
    return Watcher(
        settings,
        source=kwargs.pop("source", IdleSource()),
        clock=lambda: now[0],
        systemd=SystemdNotifier(address=None),
        **kwargs,
    )
