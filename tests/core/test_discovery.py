"""Reading list pages, the discovery filter and cap, the creation state, list-vouched skips."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.core.factories import T0, snap
from watcher.core.diff import diff_states, session_ref
from watcher.core.discovery import (
    ListedSession,
    ListMark,
    ListPageError,
    creation_state,
    decide_fetch,
    facts_from_snapshot,
    include_verdict,
    listed_change,
    parse_list_page,
    select_sessions,
)
from watcher.core.model import EventType
from watcher.core.settings import WatchedSession
from watcher.core.snapshot import to_unix_ms

MS = int(T0.timestamp() * 1000)
FULL = {
    "sessionId": "s1",
    "title": "release-42",
    "status": "idle",
    "messageCount": 4,
    "createdAt": MS - 60_000,
    "updatedAt": MS,
    "computerId": "cmp_a",
    "sessionSettings": {"tags": [{"name": "nightly"}, {"bad": 1}]},
}


def page(*items: Any, more: bool = False, cursor: Any = None) -> dict[str, Any]:
    """A list body."""
    return {"sessions": list(items), "pagination": {"hasMore": more, "nextCursor": cursor}}


def test_full_items_carry_facts_and_a_snapshot() -> None:
    """An item with a status is read as a full description, and as a snapshot when it is one."""
    [item] = parse_list_page(page(FULL)).sessions
    assert (item.title, item.status, item.computer_id, item.tags) == (
        "release-42",
        "idle",
        "cmp_a",
        ("nightly",),
    )
    assert item.full
    assert item.snapshot is not None
    assert item.snapshot.message_count == 4
    assert to_unix_ms(item.updated_at) == MS  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "ids", "cursor", "skipped"),
    [
        (page({"sessionId": "a"}, {"sessionId": "b"}), ["a", "b"], None, 0),
        (page({"sessionId": "a"}, more=True, cursor="c2"), ["a"], "c2", 0),
        (page({"sessionId": "a"}, more=False, cursor="stale"), ["a"], None, 0),
        (
            page({"id": "x"}, {"sessionId": ""}, {"sessionId": 5}, "s", {"sessionId": "a/b"}),
            [],
            None,
            5,
        ),
        ({"sessions": [], "pagination": None}, [], None, 0),
    ],
)
def test_pages_are_read_defensively(
    body: dict[str, Any], ids: list[str], cursor: str | None, skipped: int
) -> None:
    """Only sessionId is required; a bad item is skipped, not fatal."""
    parsed = parse_list_page(body)
    assert [s.session_id for s in parsed.sessions] == ids
    assert (parsed.next_cursor, parsed.skipped) == (cursor, skipped)
    assert all(not s.full and s.snapshot is None for s in parsed.sessions)


@pytest.mark.parametrize(
    "body",
    [[], {"items": []}, {"sessions": {}}, page(more=True), page(more=True, cursor="")],
)
def test_a_body_that_is_not_a_page_fails(body: Any) -> None:
    """No sessions list, or more pages without a cursor: the list call failed."""
    with pytest.raises(ListPageError):
        parse_list_page(body)


def listed(session_id: str, minutes_old: float | None = 1, **facts: Any) -> ListedSession:
    """A full list item created `minutes_old` minutes before T0."""
    created = None if minutes_old is None else T0 - timedelta(minutes=minutes_old)
    base: dict[str, Any] = {"title": "t", "status": "idle", "tags": (), "full": True}
    return ListedSession(session_id, created_at=created, **{**base, **facts})


@pytest.mark.parametrize(
    ("item", "conditions", "expected"),
    [
        (listed("a", title="release-1"), {"titles": ["release-*"]}, True),
        (listed("a", title="hotfix"), {"titles": ["release-*"]}, False),
        (listed("a", tags=("x", "nightly")), {"tags": ["nightly", "weekly"]}, True),
        (listed("a", tags=()), {"tags": ["nightly"]}, False),
        (listed("a", computer_id="cmp_1"), {"computers": ["cmp_*"]}, True),
        (listed("a"), {"computers": ["cmp_*"]}, False),
        (listed("a", 60 * 24 * 8), {"created_within": timedelta(days=7)}, False),
        (listed("a", 60), {"created_within": timedelta(days=7)}, True),
        (ListedSession("a"), {"titles": ["x"]}, None),
        (ListedSession("a"), {"created_within": timedelta(days=7)}, None),
        (ListedSession("a"), {}, True),
        (
            listed("a", title="release-1", tags=("nightly",)),
            {"titles": ["release-*"], "tags": ["weekly"]},
            False,
        ),
    ],
)
def test_include_conditions(
    item: ListedSession, conditions: dict[str, Any], expected: bool | None
) -> None:
    """Every present condition must hold; a bare item cannot be judged (None)."""
    args: dict[str, Any] = {"titles": (), "tags": (), "computers": (), "created_within": None}
    assert include_verdict(item, **{**args, **conditions}, now=T0) is expected


def test_selection_keeps_the_newest_within_the_cap_and_skips_configured_sessions() -> None:
    """max_sessions keeps the newest; configured ids and duplicates are not discovered."""
    items = [
        listed("old", 30),
        listed("new", 1),
        listed("mid", 10),
        listed("cfg", 0),
        listed("new", 1),
        listed("undated", None),
        ListedSession("bare"),
    ]
    chosen = select_sessions(items, titles=["t"], max_sessions=2, exclude={"cfg"}, now=T0)
    assert [s.session_id for s in chosen.chosen] == ["new", "mid"]
    assert chosen.unresolved == ("bare",)
    assert chosen.capped == 2
    everything = select_sessions(items, max_sessions=10, now=T0)
    assert [s.session_id for s in everything.chosen][-2:] == ["undated", "bare"]


def test_facts_from_a_snapshot_resolve_a_bare_item() -> None:
    """A session read on its own supplies the facts a bare item lacked."""
    facts = facts_from_snapshot(snap(title="release-9", tags=("nightly",)))
    assert include_verdict(facts, ["release-*"], ["nightly"], [], timedelta(days=1), T0) is True


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (
            snap(status="idle", message_count=4, completed_at=T0),
            [
                (EventType.STATUS_CHANGED, {"from": "running", "to": "idle"}),
                (EventType.COMPLETED, None),
                (EventType.MESSAGES_ADDED, {"added": 4, "total": 4}),
            ],
        ),
        (snap(status="running", message_count=1), [(EventType.MESSAGES_ADDED, None)]),
        (snap(status="pending", message_count=0), []),
    ],
)
def test_a_session_created_after_the_first_discovery_diffs_from_empty(
    current: Any, expected: list[tuple[EventType, dict[str, Any] | None]]
) -> None:
    """A run that started and finished before the first listing reads as finished and completed."""
    empty = creation_state(current)
    assert (empty.message_count, empty.completed_at, empty.updated_at) == (
        0,
        None,
        current.created_at,
    )
    events = diff_states(empty, current, session_ref(WatchedSession("s1"), current, None), T0)
    assert [e.type for e in events] == [t for t, _ in expected]
    for found, (_, data) in zip(events, expected, strict=True):
        if data is not None:
            assert dict(found.data) == data


def mark(updated: datetime, listed_at: datetime) -> ListMark:
    return ListMark(to_unix_ms(updated), listed_at)


MIN = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("listing", "stored", "fetched", "interval", "fetch", "why"),
    [
        (None, T0, T0 - MIN, 5 * MIN, True, "not vouched"),
        (mark(T0, T0), None, None, 5 * MIN, True, "not vouched"),
        (mark(T0, T0), T0, T0 - 11 * MIN, 5 * MIN, True, "max_idle"),
        (mark(T0, T0), T0, None, 5 * MIN, True, "max_idle"),
        (mark(T0 + MIN, T0), T0, T0 - MIN, 5 * MIN, True, "moved"),
        (mark(T0, T0 - 6 * MIN), T0, T0 - 7 * MIN, 5 * MIN, True, "older than the interval"),
        (mark(T0, T0 - 30 * MIN / 60), T0, T0 - MIN, timedelta(seconds=5), True, "older"),
        (mark(T0, T0 - MIN), T0, T0 - 2 * MIN, 5 * MIN, False, "unchanged"),
    ],
)
def test_decide_fetch(
    listing: ListMark | None,
    stored: datetime | None,
    fetched: datetime | None,
    interval: timedelta,
    fetch: bool,
    why: str,
) -> None:
    """The list stands in for a poll only when fresh, unchanged, and within max_idle."""
    decision = decide_fetch(listing, stored, fetched, interval, 10 * MIN, T0)
    assert decision.fetch is fetch
    assert why in decision.reason


def test_listed_change() -> None:
    """updatedAt moved in the listing, compared to the millisecond."""
    assert listed_change(mark(T0 + timedelta(milliseconds=1), T0), T0)
    assert not listed_change(mark(T0, T0), T0)
    assert not listed_change(None, T0)
    assert not listed_change(mark(T0, T0), None)
