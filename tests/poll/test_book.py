"""The session book: one entry per session, the watch list, and one `forget`."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.core.discovery import ListedSession, ListMark
from watcher.core.model import Gone
from watcher.core.poll import FetchFailed, FetchFailureKind
from watcher.core.secret import Secret
from watcher.core.settings import DiscoverSettings, FactorySettings, Settings, WatchedSession
from watcher.poll.backoff import Backoff
from watcher.poll.book import SessionBook, SessionEntry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(
    factory=FactorySettings(api_key=Secret("k")),
    state_path=Path("unused.db"),
    sessions=(WatchedSession(id="conf", name="configured"),),
)


def full_entry() -> SessionEntry:
    """An entry with every field set."""
    return SessionEntry(
        state=Gone("s1", None),
        fetched_at=T0,
        listing=ListMark(1, T0),
        facts=ListedSession("s1"),
        digest=b"d",
        interval=timedelta(seconds=5),
        raising=True,
        leaving=True,
    )


def test_forget_releases_everything_kept_for_a_session() -> None:
    """Entry, watch and backoff go; the discovered mark stays (the store still has it)."""
    book = SessionBook({}, discovered={"s1"}, backoff=Backoff(lambda: 0.0))
    book.watch(replace(SETTINGS, discover=DiscoverSettings()))
    book.entries["s1"] = full_entry()
    book.backoff.failed(
        "s1", timedelta(seconds=1), FetchFailed(FetchFailureKind.RETRYABLE, "x"), T0
    )
    assert all(getattr(book.entries["s1"], f.name) for f in fields(SessionEntry))
    book.forget("s1")
    assert "s1" not in book.entries
    assert "s1" not in book.watched
    assert (book.backoff.failures, book.backoff.paused_until) == ({}, {})
    assert book.is_discovered("s1")
    book.drop("s1")
    assert not book.is_discovered("s1")


def test_the_watch_list_is_discovered_sessions_then_configured_ones() -> None:
    """Discovered ids (sorted, with discovery's labels) come first; configured ones win."""
    book = SessionBook({}, discovered={"b", "a", "conf"}, backoff=Backoff(lambda: 0.0))
    assert list(book.watch_list(SETTINGS)) == ["conf"]  # discovery off: only configured
    settings = replace(SETTINGS, discover=DiscoverSettings(labels={"team": "x"}))
    before = book.watch(settings)
    assert before == {}
    assert list(book.watched) == ["a", "b", "conf"]
    assert book.watched["a"].labels == {"team": "x"}
    assert book.watched["conf"].name == "configured"
    assert not book.is_discovered("conf")  # configured, though also discovered
    assert book.version == 1


def test_leaving_marks_discovered_sessions_not_chosen_once() -> None:
    """A discovered session missing from the listing is marked once; listed again, it stays."""
    book = SessionBook({}, discovered={"a", "b", "conf"}, backoff=Backoff(lambda: 0.0))
    book.watch(replace(SETTINGS, discover=DiscoverSettings()))
    assert book.mark_leaving(["a"]) == ["b"]  # configured sessions never leave
    assert book.mark_leaving(["a"]) == []  # already leaving
    book.keep(["b"])
    assert not book.entry("b").leaving
    assert book.mark_leaving(["a"]) == ["b"]


def test_states_loaded_at_start_are_known_and_unknown_ones_are_empty() -> None:
    """The book starts from the stored states; an unknown session has no state or interval."""
    gone = Gone("s1", None)
    book = SessionBook({"s1": gone}, backoff=Backoff(lambda: 0.0))
    assert book.state("s1") is gone
    assert book.state("nope") is None
    assert book.interval("nope") is None
    assert "nope" not in book.entries  # looking does not make an entry


def test_forget_tells_every_part_that_registered() -> None:
    """Each release registered with `on_forget` is called with the forgotten id."""
    book = SessionBook({}, backoff=Backoff(lambda: 0.0))
    told: list[tuple[str, str]] = []
    book.on_forget(lambda sid: told.append(("client", sid)))
    book.on_forget(lambda sid: told.append(("timetable", sid)))
    book.forget("s1")
    book.drop("s2")
    assert told == [("client", "s1"), ("timetable", "s1"), ("client", "s2"), ("timetable", "s2")]


PRUNES = [
    ("listed sessions keep their entries", ["listed"], {"conf", "listed"}),
    ("nothing listed: only watched ones stay", [], {"conf"}),
]


@pytest.mark.parametrize(("listed", "kept"), [c[1:] for c in PRUNES], ids=[c[0] for c in PRUNES])
def test_prune_forgets_what_is_neither_watched_nor_listed(
    listed: list[str], kept: set[str]
) -> None:
    """Entries of sessions neither watched nor in the listing are forgotten, with the parts'."""
    book = SessionBook({}, backoff=Backoff(lambda: 0.0))
    book.watch(replace(SETTINGS, discover=DiscoverSettings()))
    for session_id in ("conf", "listed", "gone"):
        book.entry(session_id)
    told: list[str] = []
    book.on_forget(told.append)
    assert sorted(book.prune(listed)) == sorted({"conf", "listed", "gone"} - kept)
    assert set(book.entries) == kept
    assert sorted(told) == sorted({"conf", "listed", "gone"} - kept)


def test_without_discovery_watch_keeps_only_watched_entries() -> None:
    """States loaded at start of sessions no longer configured leave with the first watch."""
    book = SessionBook(
        {"conf": Gone("conf", None), "old": Gone("old", None)}, backoff=Backoff(lambda: 0.0)
    )
    book.watch(SETTINGS)
    assert set(book.entries) == {"conf"}


@pytest.mark.parametrize("discover", [None, DiscoverSettings()], ids=["without", "with discovery"])
def test_watch_forgets_each_session_no_longer_watched_once(
    discover: DiscoverSettings | None,
) -> None:
    """A session the new settings no longer watch is forgotten, and each part told once."""
    settings = replace(SETTINGS, discover=discover)
    book = SessionBook({}, backoff=Backoff(lambda: 0.0))
    book.watch(replace(settings, sessions=(*SETTINGS.sessions, WatchedSession(id="old"))))
    book.entry("old")
    told: list[str] = []
    book.on_forget(told.append)
    before = book.watch(settings)
    assert set(before) == {"conf", "old"}
    assert "old" not in book.entries
    assert told == ["old"]
