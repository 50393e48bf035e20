"""Report content on a simulated history: what happened in the window, and what is now."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.reportsim import END, START, URL, History, at
from tests.webhook_schema import schema_problems
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.render import render_webhook
from watcher.core.report import (
    HAPPENED,
    KINDS,
    RecordedEvent,
    ReportHistory,
    build_report,
    report_event,
)
from watcher.core.settings import ReportSpec

Script = Callable[[History], None]


def finished(h: History) -> None:
    """Idle before the window; a run from 2:00 that completes at 2:59, seen at 3:00."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(180, "a", "idle", completed=179, message_count=4)


def interrupted(h: History) -> None:
    """A run from 2:00 that stops at 2:30 without a completion."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(150, "a", "idle")


def finished_across_start(h: History) -> None:
    """A run from 0:30 (before the window) that completes at 1:29."""
    h.poll(10, "a", "idle", created=0)
    h.poll(30, "a", "running")
    h.poll(40, "a", message_count=2)
    h.poll(90, "a", "idle", completed=89)


def interrupted_across_start(h: History) -> None:
    """A run from 0:30 (before the window) interrupted at 1:30."""
    h.poll(10, "a", "idle", created=0)
    h.poll(30, "a", "running")
    h.poll(40, "a", message_count=2)
    h.poll(90, "a", "idle")


def running_at_end(h: History) -> None:
    """A run from 24:00 still going at the window's end, with progress at 24:50."""
    h.poll(30, "a", "idle", created=0)
    h.poll(1440, "a", "running")
    h.poll(1490, "a", message_count=5)


def stuck(h: History) -> None:
    """Running from 2:00, no progress after 2:10: stuck since then."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(130, "a", message_count=1)
    h.poll(1400, "a")


def waiting(h: History) -> None:
    """Pending (waiting for a person) from 3:00."""
    h.poll(30, "a", "idle", created=0)
    h.poll(180, "a", "pending")


def left_the_watch_set(h: History) -> None:
    """Finished in the window, then pending, then no longer watched: not waiting now."""
    h.poll(30, "a", "idle", created=0)
    h.poll(30, "b", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(180, "a", "idle", completed=179)
    h.poll(240, "a", "pending")
    h.watch(300, "b")


def before_the_window(h: History) -> None:
    """Everything happened before the window: nothing to say."""
    h.poll(5, "a", "idle", created=0)
    h.poll(10, "a", "running")
    h.poll(50, "a", "idle", completed=49)


def archived_and_deleted(h: History) -> None:
    """One session archived at 3:00, another deleted (404) at 4:00."""
    h.poll(30, "a", "idle", created=0)
    h.poll(30, "b", "idle", created=0)
    h.poll(180, "a", archived_at="2026-12-01T02:59:00Z")
    h.gone(240, "b")


def between_polls(h: History) -> None:
    """A first run that started and completed between two polls: finished, from creation."""
    h.poll(30, "a", "idle", created=0)
    h.poll(300, "a", "idle", completed=290)


def new_in_window(h: History) -> None:
    """A session created at 2:00, first seen running at 2:05, completes at 3:00."""
    h.poll(125, "a", "running", created=120)
    h.poll(181, "a", "idle", completed=180)


def completed_still_busy(h: History) -> None:
    """A completion while the session keeps running: completed, not finished; stuck since."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(180, "a", completed=170)


def completion_seen_late(h: History) -> None:
    """Idle at 2:30, its completion seen 20 s later: a finish, not an interruption."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(150, "a", "idle")
    h.poll(150 + 20 / 60, "a", completed=150)


def interrupted_then_completed(h: History) -> None:
    """Interrupted at 2:30; a completion two minutes later is a finish of its own."""
    h.poll(30, "a", "idle", created=0)
    h.poll(120, "a", "running")
    h.poll(150, "a", "idle")
    h.poll(152, "a", completed=151)


CASES: list[tuple[Script, dict[str, list[str]], list[tuple[str, str, float]]]] = [
    # (history, sessions per kind, longest runs as (session, outcome, minutes))
    (finished, {"started": ["a"], "finished": ["a"], "completed": ["a"]}, [("a", "finished", 59)]),
    (interrupted, {"started": ["a"], "interrupted": ["a"]}, [("a", "interrupted", 30)]),
    (finished_across_start, {"finished": ["a"], "completed": ["a"]}, [("a", "finished", 59)]),
    (interrupted_across_start, {"interrupted": ["a"]}, [("a", "interrupted", 60)]),
    (running_at_end, {"started": ["a"]}, [("a", "running", 60)]),
    (stuck, {"started": ["a"], "stuck": ["a"]}, [("a", "running", 1380)]),
    (waiting, {"waiting": ["a"]}, []),
    (
        left_the_watch_set,
        {"started": ["a"], "finished": ["a"], "completed": ["a"]},
        [("a", "finished", 59)],
    ),
    (before_the_window, {}, []),
    (
        completion_seen_late,
        {"started": ["a"], "finished": ["a"], "completed": ["a"]},
        [("a", "finished", 30)],
    ),
    (
        interrupted_then_completed,
        {"started": ["a"], "interrupted": ["a"], "finished": ["a"], "completed": ["a"]},
        # The finish's run is the lifecycle's: a first run, from the session's creation.
        [("a", "finished", 151), ("a", "interrupted", 30)],
    ),
    (archived_and_deleted, {"archived": ["a"], "deleted": ["b"]}, []),
    (between_polls, {"finished": ["a"], "completed": ["a"]}, [("a", "finished", 290)]),
    (
        new_in_window,
        {"started": ["a"], "finished": ["a"], "completed": ["a"]},
        [("a", "finished", 60)],
    ),
    (
        completed_still_busy,
        {"started": ["a"], "completed": ["a"], "stuck": ["a"]},
        [
            ("a", "running", 1380),
            ("a", "completed", 50),
        ],
    ),
]


def _ids(report_doc: dict[str, Any], kind: str) -> list[str]:
    return [item["id"] for item in report_doc["sessions"][kind]]


@pytest.mark.parametrize(("script", "expected", "runs"), CASES, ids=[c[0].__name__ for c in CASES])
def test_report_content_follows_the_sessions_history(
    script: Script, expected: dict[str, list[str]], runs: list[tuple[str, str, float]]
) -> None:
    """Each kind lists exactly the sessions the history says, counted, and the longest runs."""
    h = History()
    script(h)
    doc = dict(h.report().document)
    for kind in KINDS:
        assert _ids(doc, kind) == expected.get(kind, []), kind
        assert doc["counts"][kind] == len(expected.get(kind, []))
    got = [(r["session"]["id"], r["outcome"], r["duration_s"] / 60) for r in doc["longest_runs"]]
    assert got == [(sid, outcome, pytest.approx(minutes)) for sid, outcome, minutes in runs]
    assert doc["empty"] is (not expected and not runs)


def test_every_named_session_is_linked() -> None:
    """Each session listed anywhere in the document carries its link."""
    h = History()
    finished(h)
    h.poll(180, "w", "pending", created=100)
    doc = h.report().document
    named = [i for kind in KINDS for i in doc["sessions"][kind]]
    named += [r["session"] for r in doc["longest_runs"]]
    assert named
    for item in named:
        assert item["url"] == URL.replace("{id}", item["id"])


def test_a_session_interrupted_twice_is_listed_once_with_its_count() -> None:
    """Two runs interrupted in one window: one entry, `times` 2."""
    h = History()
    interrupted(h)
    h.poll(200, "a", "running")
    h.poll(260, "a", "idle")
    doc = h.report().document
    assert doc["sessions"]["interrupted"] == [
        {"id": "a", "name": "task-a", "url": URL.replace("{id}", "a"), "status": "idle", "times": 2}
    ]
    assert [r["duration_s"] for r in doc["longest_runs"]] == [3600, 1800]


def test_usage_counts_only_what_was_used_in_the_window() -> None:
    """Credits, tokens and active time are the window's difference, not the totals."""
    h = History()
    h.poll(30, "a", "running", created=0, credits=10, tokens=1000, assistant_active_ms=60_000)
    h.poll(180, "a", "idle", completed=170, credits=25, tokens=3000, assistant_active_ms=240_000)
    h.poll(1600, "a", "running", credits=99, tokens=9000)  # after the window
    doc = h.report().document
    assert doc["credits"] == 15
    assert doc["tokens"] == {
        "input": 2000,
        "output": 1000,
        "cache": 0,
        "thinking": 0,
        "total": 3000,
    }
    assert doc["active_s"] == 180
    assert doc["top_credits"] == [
        {
            "session": {
                "id": "a",
                "name": "task-a",
                "url": URL.replace("{id}", "a"),
                "status": "running",
            },
            "credits": 15,
        }
    ]


def test_a_session_created_in_the_window_counts_from_zero() -> None:
    """A new session's use is all of this window's, even what it did before its first poll."""
    h = History()
    h.poll(130, "n", "running", created=120, credits=4)
    h.poll(200, "n", "idle", completed=199, credits=9)
    assert h.report().document["credits"] == 9


def test_top_five_sessions_by_credits() -> None:
    """The five sessions that used the most credits in the window, most first."""
    h = History()
    used = {"a": 3, "b": 30, "c": 7, "d": 12, "e": 1, "f": 20, "g": 5}
    for sid, credits in used.items():
        h.poll(30, sid, "running", created=0, credits=100)
        h.poll(200, sid, "idle", completed=190, credits=100 + credits)
    doc = h.report().document
    assert [(t["session"]["id"], t["credits"]) for t in doc["top_credits"]] == [
        ("b", 30),
        ("f", 20),
        ("d", 12),
        ("c", 7),
        ("g", 5),
    ]
    assert doc["credits"] == sum(used.values())


def test_group_by_counts_per_label_value() -> None:
    """With `group_by`, each value of the label (and sessions without it) gets its counts."""
    h = History()
    h.labels = {"a": {"team": "platform"}, "b": {"team": "platform"}, "c": {"team": "web"}}
    for sid in "abcd":
        h.poll(30, sid, "idle", created=0, credits=0)
        h.poll(120, sid, "running")
    h.poll(180, "a", "idle", completed=179, credits=2)
    h.poll(180, "b", "idle", credits=3)
    h.poll(180, "c", "idle", completed=179, credits=5)
    h.poll(180, "d", "pending")
    spec = ReportSpec("daily", "0 9 * * *", group_by="team")
    groups = h.report(spec).document["groups"]
    summary = {
        g["value"]: ({k: n for k, n in g["counts"].items() if n}, g["credits"]) for g in groups
    }
    assert summary == {
        "platform": ({"started": 2, "finished": 1, "completed": 1, "interrupted": 1}, 5),
        "web": ({"started": 1, "finished": 1, "completed": 1}, 5),
        None: ({"started": 1, "waiting": 1}, 0),
    }
    assert list(summary) == ["platform", "web", None]


FILTERS = [
    (ReportSpec("r", "0 9 * * *", session_globs=("task-a*",)), ["a"]),
    (ReportSpec("r", "0 9 * * *", labels={"team": "web"}), ["b"]),
    (ReportSpec("r", "0 9 * * *", title_globs=("Task c",)), ["c"]),
    (ReportSpec("r", "0 9 * * *"), ["a", "b", "c"]),
]


@pytest.mark.parametrize(("spec", "ids"), FILTERS)
def test_session_filters_match_as_rules_do(spec: ReportSpec, ids: list[str]) -> None:
    """`session`, `labels` and `title` pick the sessions a report covers."""
    h = History()
    h.labels = {"a": {"team": "platform"}, "b": {"team": "web"}}
    for sid in "abc":
        h.poll(30, sid, "idle", created=0, credits=0)
        h.poll(120, sid, "running")
        h.poll(180, sid, "idle", completed=179, credits=1)
    doc = h.report(spec).document
    assert _ids(doc, "finished") == ids
    assert doc["credits"] == len(ids)


def test_nothing_happened_is_empty() -> None:
    """An empty store, or a window with nothing in it, is an empty report."""
    empty = build_report(ReportSpec("r", "0 9 * * *"), ReportHistory(), START, END, END, URL)
    assert empty.is_empty
    assert all(empty.document["counts"][k] == 0 for k in KINDS)
    h = History()
    finished(h)
    assert not h.report().is_empty
    assert h.report(start=at(200), end=at(300)).is_empty


def test_consecutive_windows_count_each_event_once() -> None:
    """Splitting a day at any point counts every finish in exactly one of the halves."""
    h = History()
    for n, sid in enumerate("abcdef"):
        h.poll(30, sid, "idle", created=0)
        h.poll(100 + 100 * n, sid, "running")
        h.poll(150 + 100 * n, sid, "idle", completed=149 + 100 * n)
    middle = at(450)
    first = h.report(end=middle).document["counts"]
    second = h.report(start=middle).document["counts"]
    for kind in HAPPENED:
        assert first[kind] + second[kind] == h.report().document["counts"][kind]
    # The finish seen by the poll at the split itself belongs to the first window.
    assert first["finished"] == 4
    assert second["finished"] == 2


def test_report_event_has_a_stable_id_and_carries_the_document() -> None:
    """The event of a run: id from name and scheduled time, data the document."""
    spec = ReportSpec("daily", "0 9 * * *")
    h = History()
    finished(h)
    report = h.report(spec)
    event = report_event(spec, report, END)
    assert event.id == f"report:daily:{END.isoformat()}"
    assert event.type is EventType.REPORT
    assert event.session is None
    assert event.occurred_at == END
    assert event.data == report.document
    assert report_event(spec, h.report(spec, now=END + timedelta(minutes=5)), END).id == event.id


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
odd_data = st.dictionaries(
    st.sampled_from(["from", "to", "run", "completed_at", "added", "x"]),
    json_leaf | st.dictionaries(st.sampled_from(["started_at", "duration_s"]), json_leaf),
    max_size=4,
)


@settings(max_examples=80, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(EventType)), min_size=1, max_size=8),
    data=st.lists(odd_data, min_size=8, max_size=8),
    statuses=st.lists(st.sampled_from(["idle", "running", "pending", "", "weird"]), min_size=8),
)
def test_any_stored_events_make_a_report_with_a_valid_body(
    kinds: list[EventType], data: list[dict[str, Any]], statuses: list[str]
) -> None:
    """Whatever the stored events say, a report is made and its webhook body is valid."""
    recorded = []
    for n, kind in enumerate(kinds):
        ref = SessionRef(id=f"s{n % 3}", status=statuses[n], url=f"https://x/{n % 3}")
        event = Event(f"e{n}", kind, at(100 + n), ref if n % 4 else None, data[n])
        recorded.append(RecordedEvent(event, at(100 + n)))
    history = ReportHistory(events=tuple(recorded), run_starts={"s1": at(-5)})
    report = build_report(
        ReportSpec("r", "0 9 * * *", group_by="team"), history, START, END, END, URL
    )
    body = json.loads(
        render_webhook(
            replace(report_event(ReportSpec("r", "0 9 * * *"), report, END), sequence=1), "report:r"
        ).body
    )
    assert schema_problems(body) == []
