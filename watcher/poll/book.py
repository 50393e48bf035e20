"""The session book: what the daemon knows of each session between polls.

One entry per session (its last state, the time of its last own read, what the
latest listing said of it, facts read to judge a bare list item, the digest of
the body its stored state came from, its current poll interval, whether its
last poll raised and whether it is leaving), the watch list (configured
sessions plus discovered ones), and the backoff kept per session. One
`forget(session_id)` releases all of it, and tells every part that keeps
something of its own per session (the API client's prepared request, the
timetable's slot) through the releases they registered with `on_forget`:
a session that leaves, however it leaves, leaves nothing behind. Memory only:
the store keeps the truth, this is what scheduling decisions and the
identical-body skip read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.discovery import ListedSession, ListMark
from watcher.core.model import SessionState, Snapshot
from watcher.core.settings import Settings, WatchedSession
from watcher.poll.backoff import Backoff


@dataclass(slots=True)
class SessionEntry:
    """What is known of one session (mutable: the poller updates it in place)."""

    state: SessionState | None = None
    fetched_at: datetime | None = None  # last own read (not the list)
    listing: ListMark | None = None  # what the latest listing said
    facts: ListedSession | None = None  # read on its own to judge a bare list item
    # The digest of the last body the stored state was derived from. An identical
    # body cannot change that state, so it skips parsing, diffing and the database.
    # None at start: the first poll after a start compares with the stored snapshot.
    digest: bytes | None = None
    interval: timedelta | None = None  # the poll interval it is scheduled at (None: off)
    raising: bool = False  # its last poll raised (the traceback was logged once)
    leaving: bool = False  # left the list: one last poll, then dropped

    @property
    def updated_at(self) -> datetime | None:
        """The stored snapshot's `updatedAt`, if a snapshot is known."""
        state = self.state
        return state.updated_at if isinstance(state, Snapshot) else None


class SessionBook:
    """Every session's entry, the watch list, and the backoff kept for them."""

    def __init__(
        self,
        states: Mapping[str, SessionState],
        *,
        discovered: Iterable[str] = (),
        first_discovery_at: datetime | None = None,
        backoff: Backoff,
    ) -> None:
        self.entries: dict[str, SessionEntry] = {
            session_id: SessionEntry(state=state) for session_id, state in states.items()
        }
        self.backoff = backoff
        self.discovered: set[str] = set(discovered)
        self.first_discovery_at = first_discovery_at
        self.configured: frozenset[str] = frozenset()
        self.watched: dict[str, WatchedSession] = {}
        self.version = 0  # bumped by `watch()`: the watched set is written for `status`
        self._releases: list[Callable[[str], None]] = []  # what `forget` tells the parts

    def on_forget(self, release: Callable[[str], None]) -> None:
        """Call `release(session_id)` on every `forget`: a part drops what it keeps."""
        self._releases.append(release)

    def entry(self, session_id: str) -> SessionEntry:
        """The entry of `session_id`, made empty on first use."""
        entry = self.entries.get(session_id)
        if entry is None:
            entry = self.entries[session_id] = SessionEntry()
        return entry

    def state(self, session_id: str) -> SessionState | None:
        """The last known state of `session_id`."""
        entry = self.entries.get(session_id)
        return None if entry is None else entry.state

    def interval(self, session_id: str) -> timedelta | None:
        """The interval `session_id` is polled at now (None: not polled, or unknown)."""
        entry = self.entries.get(session_id)
        return None if entry is None else entry.interval

    def is_discovered(self, session_id: str) -> bool:
        """Whether `session_id` is watched because discovery found it (not configured)."""
        return session_id in self.discovered and session_id not in self.configured

    def watch_list(self, settings: Settings) -> dict[str, WatchedSession]:
        """Configured sessions, plus discovered ones while discovery is on."""
        watched: dict[str, WatchedSession] = {}
        if settings.discover is not None:
            labels = dict(settings.discover.labels)
            for session_id in sorted(self.discovered):
                watched[session_id] = WatchedSession(id=session_id, labels=labels)
        watched.update({w.id: w for w in settings.sessions})
        return watched

    def watch(self, settings: Settings) -> dict[str, WatchedSession]:
        """Watch what `settings` asks for, forgetting every session no longer watched;
        returns the watch list it replaced."""
        before = self.watched
        self.configured = frozenset(w.id for w in settings.sessions)
        self.watched = self.watch_list(settings)
        self.version += 1
        if settings.discover is None:
            # Nothing reads an unwatched session's entry without discovery (with it,
            # a listed session's stored state spares reading it to judge it).
            self.prune(())
        else:
            for session_id in before.keys() - self.watched.keys():
                self.forget(session_id)
        return before

    def add(self, watched: WatchedSession) -> None:
        """Watch a session discovery just found."""
        self.discovered.add(watched.id)
        self.watched[watched.id] = watched

    def mark_leaving(self, chosen: Iterable[str]) -> list[str]:
        """Discovered sessions not in `chosen`: each newly marked gets one last poll (sorted)."""
        leaving = []
        for session_id in self.discovered - set(chosen) - self.configured:
            entry = self.entry(session_id)
            if not entry.leaving:
                entry.leaving = True
                leaving.append(session_id)
        return sorted(leaving)

    def keep(self, chosen: Iterable[str]) -> None:
        """Sessions listed again stop leaving."""
        for session_id in chosen:
            entry = self.entries.get(session_id)
            if entry is not None:
                entry.leaving = False

    def forget(self, session_id: str) -> None:
        """Release everything kept in memory for `session_id`: entry, watch, backoff, and
        what each part registered with `on_forget`."""
        self.entries.pop(session_id, None)
        self.watched.pop(session_id, None)
        self.backoff.forget(session_id)
        for release in self._releases:
            release(session_id)

    def prune(self, listed: Iterable[str]) -> list[str]:
        """Forget every session neither watched nor in `listed` (the latest complete
        listing, whose entries keep what was read to judge them); the ids forgotten."""
        keep = set(listed)
        gone = [sid for sid in self.entries if sid not in self.watched and sid not in keep]
        for session_id in gone:
            self.forget(session_id)
        return gone

    def drop(self, session_id: str) -> None:
        """A discovered session left the list: forget it, and it is no longer discovered."""
        self.forget(session_id)
        self.discovered.discard(session_id)
