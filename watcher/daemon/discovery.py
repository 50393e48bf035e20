"""The discovery loop: every `discover.interval` the session list is read, filtered by
the `discover:` settings, and the watch list follows it.

New sessions are watched (the very first pass takes each listed session's
state as its baseline), sessions the list shows changed are polled at once,
and a discovered session no longer chosen by a complete listing gets one last
poll before it is dropped. A complete listing also forgets what was kept to
judge sessions it no longer lists (the book's `prune`). A failed list is a failed poll (backoff,
Retry-After, API health) and drops nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import anyio
from anyio.abc import TaskGroup

from watcher.core.diff import diff_states, session_ref
from watcher.core.discovery import (
    MAX_PAGES,
    ListedSession,
    ListMark,
    ListPage,
    Selection,
    facts_from_snapshot,
    listed_change,
    select_sessions,
)
from watcher.core.model import Snapshot
from watcher.core.poll import Fetched, FetchFailed
from watcher.core.rules import route
from watcher.core.settings import DiscoverSettings, WatchedSession
from watcher.core.snapshot import to_unix_ms
from watcher.daemon.health import HealthWatch
from watcher.daemon.live import Part, Wiring
from watcher.daemon.scheduler import PollScheduler
from watcher.poll.backoff import DISCOVERY
from watcher.store import Recorded

log = logging.getLogger("watcher.daemon")


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    """What one discovery pass found, or why it failed."""

    listed: int = 0
    added: tuple[str, ...] = ()
    leaving: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()
    new_rows: int = 0
    complete: bool = True
    failure: FetchFailed | None = None


class DiscoveryLoop(Part):
    """Reads the session list and keeps the watch list in step with it."""

    def __init__(self, wiring: Wiring, *, health: HealthWatch, scheduler: PollScheduler) -> None:
        super().__init__(wiring)
        self.health = health
        self.scheduler = scheduler
        self._work: TaskGroup | None = None
        self._running = False
        self._wake = anyio.Event()

    def attach(self, work: TaskGroup | None) -> None:
        """Run the loop in `work` from now on (None: the run ended)."""
        self._work = work

    def start(self) -> None:
        """Run the loop while discovery is configured (at start, or after a reload)."""
        if self.live.settings.discover is not None and not self._running and self._work:
            self._running = True
            self._work.start_soon(self._loop)

    def hurry(self) -> None:
        """The filter changed: the next pass starts now, not a whole interval later."""
        self._wake.set()
        self._wake = anyio.Event()

    async def _loop(self) -> None:
        """Start a pass over the session list every `discover.interval` (sooner after a
        reload); one that takes longer is followed at once by the next.
        """
        try:
            while not self.live.stopping and self.live.settings.discover is not None:
                # Passes start every interval: a pass of 100 pages at 100 ms each
                # takes 10 s, which must not be added to the wait for the next one.
                started = anyio.current_time()
                try:
                    await self.discover_once()
                except Exception:  # a bug in one pass must not end discovery
                    log.exception("discovery pass crashed")
                settings = self.live.settings  # a reload may have turned discovery off
                discover = settings.discover
                if discover is None:
                    return
                now = self.clock()
                elapsed = anyio.current_time() - started
                delay = max(discover.interval.total_seconds() - elapsed, 0.0)
                paused = self.backoff.paused_until.get(DISCOVERY)
                if paused is not None:
                    delay = max(delay, (paused - now).total_seconds())
                wake = self._wake

                async def pause(seconds: float = delay, event: anyio.Event = wake) -> None:
                    with anyio.move_on_after(seconds):
                        await event.wait()

                if not await self.live.unless_stopping(pause):
                    return
        finally:
            self._running = False

    async def _list_all(self) -> tuple[list[ListedSession], bool] | FetchFailed:
        """Page through the list; (items, complete) or the failure that ended it."""
        items: list[ListedSession] = []
        cursor: str | None = None
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            if not await self.live.unless_stopping(self.budget.acquire):
                return items, False
            source = self.live.borrow()  # a reload closes the client it replaced after this
            try:
                page = await source.list_sessions(cursor)
            finally:
                self.live.give_back(source)
            if isinstance(page, FetchFailed):
                return replace(page, reason=self.live.redact(page.reason))
            items.extend(page.sessions)
            self._read_moved(page.sessions)
            if page.skipped:
                log.debug("list page: %d item(s) without a usable sessionId", page.skipped)
            if page.next_cursor is None:
                return items, True
            if page.next_cursor in cursors:
                log.warning("the session list repeated a cursor; using what was read so far")
                return items, False
            cursors.add(page.next_cursor)
            cursor = page.next_cursor
        log.warning("the session list has more than %d pages; using the first ones", MAX_PAGES)
        return items, False

    def _read_moved(self, sessions: Sequence[ListedSession]) -> None:
        """Queue a read of each watched session this page shows changed, now.

        Waiting for the end of the pass would add its length (100 pages at a
        100 ms round trip: 10 s) to the time from a change to its notification.
        """
        now = self.clock()
        book = self.book
        for item in sessions:
            if item.updated_at is None or item.session_id not in book.watched:
                continue
            entry = book.entry(item.session_id)
            mark = ListMark(to_unix_ms(item.updated_at), now)
            entry.listing = mark
            if listed_change(mark, entry.updated_at):
                self.scheduler.enqueue(item.session_id)

    def _known_facts(self, item: ListedSession) -> ListedSession:
        """A bare list item with the facts known from reading the session on its own."""
        if item.full:
            return item
        entry = self.book.entries.get(item.session_id)
        if entry is None:
            return item
        if isinstance(entry.state, Snapshot):
            return facts_from_snapshot(entry.state)
        return entry.facts or item

    async def _resolve(self, session_ids: Iterable[str]) -> bool:
        """Read bare items on their own to judge them; False if any read failed."""
        ok = True
        for session_id in session_ids:
            if not await self.live.unless_stopping(self.budget.acquire):
                return False
            # An entry before the read: the client keeps something for the session,
            # and the book's `forget` (by `prune`, once it is no longer listed) drops it.
            entry = self.book.entry(session_id)
            source = self.live.borrow()
            try:
                result = await source.fetch_session(session_id)
            finally:
                self.live.give_back(source)
            if isinstance(result, Fetched):
                entry.facts = facts_from_snapshot(result.snapshot)
            elif isinstance(result, FetchFailed):
                if result.status == 429:
                    self.budget.throttled(result.retry_after)
                ok = False
        return ok

    def _select(
        self, discover: DiscoverSettings, items: Sequence[ListedSession], now: datetime
    ) -> Selection:
        include = discover.include
        return select_sessions(
            [self._known_facts(i) for i in items],
            titles=include.titles,
            tags=include.tags,
            computers=include.computers,
            created_within=discover.created_within,
            max_sessions=discover.max_sessions,
            exclude=self.book.configured,
            now=now,
        )

    async def discover_once(self, *, dry_run: bool = False) -> DiscoveryReport:
        """One discovery pass: list, filter, remember new sessions, catch up moved ones.

        A failed list is a failed poll (backoff, Retry-After, API health) and
        drops nothing; only a complete listing lets sessions leave.
        """
        discover = self.live.settings.discover
        if discover is None:
            return DiscoveryReport()
        listing = await self._list_all()
        now = self.clock()
        if isinstance(listing, FetchFailed):
            self.stats.failed_lists += 1
            if listing.status == 429:
                self.budget.throttled(listing.retry_after)
            self.backoff.failed(DISCOVERY, discover.interval, listing, now)
            log.warning("reading the session list failed: %s", listing.reason)
            if not dry_run:
                await self.health.observe(listing, now)
            return DiscoveryReport(failure=listing, complete=False)
        items, complete = listing
        self.stats.lists += 1
        self.backoff.forget(DISCOVERY)
        if not dry_run:
            await self.health.observe(ListPage((), None), now)
        return await self._take_listing(discover, items, complete, now, dry_run=dry_run)

    async def _take_listing(
        self,
        discover: DiscoverSettings,
        items: Sequence[ListedSession],
        complete: bool,
        now: datetime,
        *,
        dry_run: bool,
    ) -> DiscoveryReport:
        """Act on one listing: new sessions, baselines, leavers, and moved sessions."""
        book = self.book
        for item in items:
            if item.updated_at is not None:
                book.entry(item.session_id).listing = ListMark(to_unix_ms(item.updated_at), now)
        selection = self._select(discover, items, now)
        if selection.unresolved:
            complete = await self._resolve(selection.unresolved) and complete
            selection = self._select(discover, items, now)
        if selection.capped:
            log.info("discovery: %d matching session(s) beyond max_sessions", selection.capped)
        chosen = {s.session_id: s for s in selection.chosen}
        first_at = None
        if book.first_discovery_at is None:
            created = [s.created_at for s in selection.chosen if s.created_at is not None]
            # The API's clock may run ahead of ours: nothing listed now counts as new later.
            first_at = max([now, *created])
        added = [sid for sid in chosen if sid not in book.discovered]
        baselines = self._baselines(added, chosen, now) if first_at is not None else []
        new_rows = 0
        if not dry_run and (added or first_at is not None):
            new_rows = await self.db(self.store.record_discovery, now, first_at, added, baselines)
        if first_at is not None:
            book.first_discovery_at = first_at
        for baseline in baselines:
            # The listing read it as fully as a poll would: its own read is due by max_idle.
            entry = book.entry(baseline.session_id)
            entry.state = baseline.state
            entry.fetched_at = now
        if new_rows:
            self.wake({r.target for b in baselines for _, r in b.routes})
        labels = dict(discover.labels)
        for session_id in added:
            watched = WatchedSession(id=session_id, labels=labels)
            book.add(watched)
            if self.scheduler.running and not self.live.stopping:
                self.scheduler.schedule(watched, first=True)
        leaving = self._leaving(chosen.keys(), items, complete=complete, dry_run=dry_run)
        moved = [sid for sid in book.watched if self._moved(sid)]
        # New sessions not taken as a baseline, moved ones, and leavers are read at once.
        baseline_ids = {b.session_id for b in baselines}
        for session_id in [*[a for a in added if a not in baseline_ids], *moved, *leaving]:
            self.scheduler.enqueue(session_id)
        log.debug(
            "discovery: %d listed, %d added, %d leaving, %d moved",
            len(items),
            len(added),
            len(leaving),
            len(moved),
        )
        return DiscoveryReport(
            len(items), tuple(added), tuple(leaving), tuple(moved), new_rows, complete
        )

    def _leaving(
        self,
        chosen: Iterable[str],
        items: Sequence[ListedSession],
        *,
        complete: bool,
        dry_run: bool,
    ) -> list[str]:
        """Discovered sessions a complete listing no longer chose (each gets one last poll).

        Such a listing also forgets sessions it no longer shows that were read or
        marked only to judge them: they leave nothing behind.
        """
        book = self.book
        chosen = set(chosen)
        leaving = book.mark_leaving(chosen) if complete else []
        book.keep(chosen)
        if complete and not dry_run:
            book.prune(item.session_id for item in items)
        return leaving

    def _moved(self, session_id: str) -> bool:
        """Whether the latest listing shows `session_id` changed since its stored state."""
        entry = self.book.entries.get(session_id)
        return (
            entry is not None
            and entry.listing is not None
            and listed_change(entry.listing, entry.updated_at)
        )

    def _baselines(
        self, added: Sequence[str], chosen: Mapping[str, ListedSession], now: datetime
    ) -> list[Recorded]:
        """The first discovery takes each listed session's state as its baseline.

        Nothing is sent for it, unless a rule asks for `session.discovered`.
        """
        out: list[Recorded] = []
        settings = self.live.settings
        labels = dict(settings.discover.labels) if settings.discover else {}
        for session_id in added:
            snapshot = chosen[session_id].snapshot
            if snapshot is None or self.book.state(session_id) is not None:
                continue  # read on its own first (or already known): the poll does it
            ref = session_ref(
                WatchedSession(id=session_id, labels=labels),
                snapshot,
                settings.factory.session_url,
            )
            events = diff_states(None, snapshot, ref, now)
            routes = tuple((e, r) for e in events for r in route(settings.rules, e))
            out.append(Recorded(session_id, snapshot, events, routes))
        return out
