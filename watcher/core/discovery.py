"""Discovery decisions: reading list pages, which listed sessions to watch, what to fetch.

The list endpoint's item schema is not documented, so items are read
defensively: only `sessionId` is required; every other fact is optional and a
filter that needs a missing fact says so (the shell then reads the session).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from watcher.core.model import KnownStatus, Snapshot
from watcher.core.snapshot import SnapshotError, from_unix_ms, parse_snapshot, to_unix_ms

PAGE_LIMIT = 100
# A cursor that never ends must not page forever: 10,000 sessions need 100 pages.
MAX_PAGES = 1_000


class ListPageError(ValueError):
    """A list answer that is not a page of sessions; the list call counts as failed."""


@dataclass(frozen=True, slots=True)
class ListedSession:
    """One list item: its id and whatever facts the item carried."""

    session_id: str
    title: str | None = None
    status: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    computer_id: str | None = None
    tags: tuple[str, ...] | None = None
    snapshot: Snapshot | None = None  # the item read as a full session, when it is one
    full: bool = False  # the item describes the session (not just its id)


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of the list: its sessions and where the next page starts."""

    sessions: tuple[ListedSession, ...]
    next_cursor: str | None
    skipped: int = 0  # items without a usable sessionId


def _ms(raw: Mapping[str, Any], key: str) -> datetime | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return from_unix_ms(value)
    except (OverflowError, OSError, ValueError):
        return None


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) else None


def parse_listed(raw: Any) -> ListedSession | None:
    """One list item, or None when it has no usable `sessionId`.

    An item with a `status` is taken as a full description (a missing title,
    tag list or computer means none); an item with only an id says nothing else.
    """
    if not isinstance(raw, Mapping):
        return None
    session_id = raw.get("sessionId")
    if not isinstance(session_id, str) or not session_id or "/" in session_id:
        return None
    if not isinstance(raw.get("status"), str):
        return ListedSession(session_id, created_at=_ms(raw, "createdAt"))
    settings = raw.get("sessionSettings")
    settings = settings if isinstance(settings, Mapping) else {}
    raw_tags = settings.get("tags")
    tags = tuple(
        t["name"]
        for t in (raw_tags if isinstance(raw_tags, list) else [])
        if isinstance(t, Mapping) and isinstance(t.get("name"), str)
    )
    try:
        snapshot: Snapshot | None = parse_snapshot(raw)
    except (SnapshotError, OverflowError, OSError, ValueError):
        snapshot = None
    return ListedSession(
        session_id=session_id,
        title=_text(raw, "title") or "",
        status=raw["status"],
        created_at=_ms(raw, "createdAt"),
        updated_at=_ms(raw, "updatedAt"),
        computer_id=_text(raw, "computerId"),
        tags=tags,
        snapshot=snapshot,
        full=True,
    )


def parse_list_page(payload: Any) -> ListPage:
    """A `GET /api/v0/sessions` body: `{sessions: [...], pagination: {hasMore, nextCursor}}`."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("sessions"), list):
        raise ListPageError("the body has no 'sessions' list")
    items = payload["sessions"]
    sessions = [s for s in (parse_listed(item) for item in items) if s is not None]
    pagination = payload.get("pagination")
    pagination = pagination if isinstance(pagination, Mapping) else {}
    cursor = pagination.get("nextCursor")
    more = pagination.get("hasMore")
    if more is True and not (isinstance(cursor, str) and cursor):
        raise ListPageError("hasMore is true but there is no nextCursor")
    next_cursor = cursor if more is True and isinstance(cursor, str) else None
    return ListPage(tuple(sessions), next_cursor, len(items) - len(sessions))


def facts_from_snapshot(snapshot: Snapshot) -> ListedSession:
    """Every fact a filter may need, from a session read on its own."""
    return ListedSession(
        session_id=snapshot.session_id,
        title=snapshot.title,
        status=snapshot.status,
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        computer_id=snapshot.computer_id,
        tags=snapshot.tags,
        snapshot=snapshot,
        full=True,
    )


def _any_glob(value: str, globs: Iterable[str]) -> bool:
    return any(fnmatchcase(value, g) for g in globs)


def include_verdict(
    item: ListedSession,
    titles: Sequence[str],
    tags: Sequence[str],
    computers: Sequence[str],
    created_within: timedelta | None,
    now: datetime,
) -> bool | None:
    """Whether `item` passes every present condition; None when a needed fact is missing."""
    if (titles or tags or computers) and not item.full:
        return None
    if titles and not _any_glob(item.title or "", titles):
        return False
    if tags and not set(item.tags or ()) & set(tags):
        return False
    if computers and not _any_glob(item.computer_id or "", computers):
        return False
    if created_within is not None:
        if item.created_at is None:
            return None
        if now - item.created_at > created_within:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Selection:
    """Listed sessions to watch (newest first), and those whose facts must be read first."""

    chosen: tuple[ListedSession, ...]
    unresolved: tuple[str, ...]
    capped: int = 0  # matching sessions left out by max_sessions


def select_sessions(
    listed: Sequence[ListedSession],
    *,
    titles: Sequence[str] = (),
    tags: Sequence[str] = (),
    computers: Sequence[str] = (),
    created_within: timedelta | None = None,
    max_sessions: int,
    exclude: Iterable[str] = (),
    now: datetime,
) -> Selection:
    """Apply the include filter and the cap (the newest win) to one complete listing.

    Sessions in `exclude` (those configured by hand) are not discovered.
    Sessions without a creation time sort as the oldest, in list order.
    """
    skip = set(exclude)
    passing: list[ListedSession] = []
    unresolved: list[str] = []
    seen: set[str] = set()
    for item in listed:
        if item.session_id in skip or item.session_id in seen:
            continue
        seen.add(item.session_id)
        verdict = include_verdict(item, titles, tags, computers, created_within, now)
        if verdict is None:
            unresolved.append(item.session_id)
        elif verdict:
            passing.append(item)
    order = sorted(
        range(len(passing)),
        key=lambda i: (passing[i].created_at is None, -_stamp(passing[i].created_at), i),
    )
    ranked = [passing[i] for i in order]
    return Selection(
        tuple(ranked[:max_sessions]), tuple(unresolved), max(0, len(ranked) - max_sessions)
    )


def _stamp(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


def creation_state(current: Snapshot) -> Snapshot:
    """The state a session created after the first discovery is treated as having had.

    Seen empty when it was created: no messages, no completion, not archived,
    nothing changed since creation. A session is created to run its first
    prompt, so its status then is `running` (`pending` when it is still
    waiting to start), and a run that started and finished before the session
    was first listed diffs into "finished" (running -> idle) and "completed".
    """
    waiting = current.status in (KnownStatus.PENDING, KnownStatus.RUNNING)
    return replace(
        current,
        status=current.status if waiting else KnownStatus.RUNNING.value,
        message_count=0,
        updated_at=current.created_at,
        completed_at=None,
        archived_at=None,
        token_usage=None,
    )


@dataclass(frozen=True, slots=True)
class ListMark:
    """What the latest listing said about one session, and when it was taken."""

    updated_at_ms: int
    listed_at: datetime


@dataclass(frozen=True, slots=True)
class FetchDecision:
    """Whether a due session must be read on its own, and why."""

    fetch: bool
    reason: str


def listed_change(mark: ListMark | None, stored_updated_at: datetime | None) -> bool:
    """Whether the listing shows the session changed since its stored snapshot."""
    if mark is None or stored_updated_at is None:
        return False
    return mark.updated_at_ms != to_unix_ms(stored_updated_at)


def decide_fetch(
    mark: ListMark | None,
    stored_updated_at: datetime | None,
    fetched_at: datetime | None,
    interval: timedelta,
    max_idle: timedelta,
    now: datetime,
) -> FetchDecision:
    """Whether a session due for a poll still needs its own request.

    The list stands in for the poll when a listing at least as fresh as the
    poll would be (taken within the last `interval`) shows the stored
    `updatedAt`; but every session is read on its own at least every `max_idle`.
    """
    if mark is None or stored_updated_at is None:
        return FetchDecision(True, "not vouched for by a listing")
    if fetched_at is None or now - fetched_at >= max_idle:
        return FetchDecision(True, "max_idle since it was last read on its own")
    if mark.updated_at_ms != to_unix_ms(stored_updated_at):
        return FetchDecision(True, "updatedAt moved in the listing")
    if now - mark.listed_at > interval:
        return FetchDecision(True, "the latest listing is older than the interval")
    return FetchDecision(False, "the listing shows it unchanged")
