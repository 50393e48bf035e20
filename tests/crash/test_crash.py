"""The SIGKILL crash harness (`bench/crash.py`): its judgement, and a CI-sized run of it."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.crash import (
    ARCHIVED,
    COMPLETED,
    DELETED,
    DISCOVERED,
    RANDOM_KILL_WINDOW,
    ROTATION,
    RUN_HEADER,
    STARTUP_KILL_WINDOW,
    Channel,
    Fact,
    FinalState,
    OutboxRecord,
    Receipt,
    RunRecord,
    Step,
    check_store,
    expected_facts,
    judge,
    make_script,
    plan_kills,
    slack_receipt,
    webhook_receipt,
)

REPO = Path(__file__).resolve().parents[2]
W, S = Channel.WEBHOOK, Channel.SLACK


def hook(key: str, session: str, kind: str, run: int, completed_at: int | None = None) -> Receipt:
    """A webhook receipt."""
    return Receipt(W, key, session, kind, run, completed_at)


# --- what is owed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "owed"),
    [
        (
            FinalState("ses-1", deleted=False, archived=True, completed_at_ms=1000),
            {Fact(W, "ses-1", COMPLETED, 1000), Fact(W, "ses-1", ARCHIVED)},
        ),
        (
            FinalState("ses-2", deleted=True, archived=True, completed_at_ms=1000),
            {Fact(W, "ses-2", DELETED)},
        ),
        (
            FinalState("slk-3", deleted=False, archived=True, completed_at_ms=7),
            {
                Fact(W, "slk-3", COMPLETED, 7),
                Fact(W, "slk-3", ARCHIVED),
                Fact(S, "slk-3", ARCHIVED),
            },
        ),
        (
            FinalState("slk-4", deleted=True, archived=False, completed_at_ms=7),
            {Fact(W, "slk-4", DELETED), Fact(S, "slk-4", DELETED)},
        ),
        (FinalState("ses-5", deleted=False, archived=False, completed_at_ms=None), set()),
    ],
    ids=["archived", "deleted-after-archive", "slack-archived", "slack-deleted", "untouched"],
)
def test_expected_facts_follow_from_final_states_only(final: FinalState, owed: set[Fact]) -> None:
    """A session owes its final completion and archive, or its deletion; slk-* owe Slack too."""
    assert expected_facts([final]) == owed


@pytest.mark.parametrize("seed", range(50))
def test_scripts_are_one_way_and_always_end(seed: int) -> None:
    """Every script runs, completes at least once and ends archived or deleted, deletion last."""
    script = make_script(random.Random(seed))
    assert script[0] is Step.START
    assert Step.COMPLETE in script
    assert script[-1] in (Step.ARCHIVE, Step.DELETE)
    assert script.count(Step.ARCHIVE) <= 1
    assert Step.DELETE not in script[:-1]


def test_kill_plans_mix_random_moments_with_rotating_failpoints() -> None:
    """About half the runs die at a random moment, the rest rotate through the three points."""
    plans = plan_kills(random.Random(3), 200)
    randoms = [p for p in plans if p.failpoint is None and not p.in_startup]
    startup = [p for p in plans if p.failpoint is None and p.in_startup]
    armed = [p.failpoint for p in plans if p.failpoint is not None]
    assert 70 <= len(randoms) + len(startup) <= 130
    assert 0 < len(startup) < len(randoms)
    assert all(RANDOM_KILL_WINDOW[0] <= p.deadline_s <= RANDOM_KILL_WINDOW[1] for p in randoms)
    assert all(STARTUP_KILL_WINDOW[0] <= p.deadline_s <= STARTUP_KILL_WINDOW[1] for p in startup)
    assert armed == [ROTATION[i % 3] for i in range(len(armed))]
    assert {p.kind for p in plans} == {"random", "random_startup", *map(str, ROTATION)}


# --- what was received --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "headers", "receipt"),
    [
        (
            {
                "type": COMPLETED,
                "session": {"id": "ses-1"},
                "data": {"completed_at": "1970-01-01T00:00:01.5+00:00"},
            },
            {"webhook-id": "evt_1", RUN_HEADER.lower(): "4"},
            hook("evt_1", "ses-1", COMPLETED, 4, 1500),
        ),
        (
            {"type": DISCOVERED, "session": {"id": "ses-1"}, "data": {}},
            {"webhook-id": "evt_2", RUN_HEADER.lower(): "0"},
            hook("evt_2", "ses-1", DISCOVERED, 0),
        ),
        ({"type": DISCOVERED, "session": {"id": "ses-1"}}, {"webhook-id": "evt_3"}, None),
        ({"type": "watcher.api_unavailable", "session": None}, {RUN_HEADER.lower(): "1"}, None),
    ],
    ids=["completion", "discovery", "no-run-header", "not-a-session-event"],
)
def test_webhook_receipts_name_event_session_and_sending_run(
    payload: object, headers: dict[str, str], receipt: Receipt | None
) -> None:
    """A webhook's key is its webhook-id; the run comes from the per-process header."""
    assert webhook_receipt(payload, headers) == receipt


@pytest.mark.parametrize(
    ("text", "path", "receipt"),
    [
        (
            ":wastebasket: slk-00007 was deleted",
            "/services/T000/B000/run12",
            Receipt(S, f"slk-00007:{DELETED}", "slk-00007", DELETED, 12),
        ),
        (
            ":file_cabinet: slk-00002 was archived",
            "/services/T000/B000/run0",
            Receipt(S, f"slk-00002:{ARCHIVED}", "slk-00002", ARCHIVED, 0),
        ),
        (":file_cabinet: slk-00002 was archived", "/services/T000/B000/XXX", None),
        (":eyes: Now watching slk-1 (pending)", "/services/T000/B000/run1", None),
    ],
    ids=["deleted", "archived", "no-run-in-url", "other-headline"],
)
def test_slack_receipts_are_keyed_by_session_and_kind(
    text: str, path: str, receipt: Receipt | None
) -> None:
    """Slack posts carry no id: session and kind identify them, the URL names the run."""
    assert slack_receipt(text, path) == receipt


# --- the verdict ---------------------------------------------------------------------------

OWED = [Fact(W, "ses-1", COMPLETED, 2000), Fact(W, "ses-1", ARCHIVED)]
RUNS = [RunRecord(0, killed=True), RunRecord(1, killed=True), RunRecord(2, killed=False)]


@pytest.mark.parametrize(
    ("receipts", "lost", "duplicates", "unexplained"),
    [
        (
            [hook("a", "ses-1", COMPLETED, 0, 2000), hook("b", "ses-1", ARCHIVED, 2)],
            0,
            0,
            0,
        ),
        (
            [hook("a", "ses-1", COMPLETED, 0, 1000), hook("b", "ses-1", ARCHIVED, 1)],
            1,
            0,
            0,
        ),
        (
            [hook("b", "ses-1", ARCHIVED, 0), hook("b", "ses-1", ARCHIVED, 1)],
            1,
            1,
            0,
        ),
        (
            [
                hook("a", "ses-1", COMPLETED, 0, 2000),
                hook("a", "ses-1", COMPLETED, 1, 2000),
                hook("a", "ses-1", COMPLETED, 2, 2000),
                hook("b", "ses-1", ARCHIVED, 2),
            ],
            0,
            2,
            0,
        ),
        (
            [hook("a", "ses-1", COMPLETED, 2, 2000), hook("a", "ses-1", COMPLETED, 2, 2000)],
            1,
            1,
            1,
        ),
        (
            [
                hook("x", "ses-1", DISCOVERED, 0),
                hook("x", "ses-1", DISCOVERED, 1),
                hook("y", "ses-1", DISCOVERED, 0),
                hook("y", "ses-1", DISCOVERED, 1),
            ],
            2,
            2,
            1,
        ),
        (
            [
                hook("x", "ses-1", DISCOVERED, 0),
                hook("x", "ses-1", DISCOVERED, 1),
                Receipt(S, f"ses-1:{ARCHIVED}", "ses-1", ARCHIVED, 0),
                Receipt(S, f"ses-1:{ARCHIVED}", "ses-1", ARCHIVED, 1),
            ],
            2,
            2,
            0,
        ),
        (
            [
                hook("x", "ses-1", DISCOVERED, 0),
                hook("x", "ses-1", DISCOVERED, 1),
                hook("y", "ses-2", DISCOVERED, 0),
                hook("y", "ses-2", DISCOVERED, 1),
            ],
            2,
            2,
            0,
        ),
        (
            [
                Receipt(S, f"ses-1:{ARCHIVED}", "ses-1", ARCHIVED, 0),
                Receipt(S, f"ses-1:{ARCHIVED}", "ses-1", ARCHIVED, 1),
                Receipt(S, f"ses-2:{ARCHIVED}", "ses-2", ARCHIVED, 0),
                Receipt(S, f"ses-2:{ARCHIVED}", "ses-2", ARCHIVED, 1),
            ],
            2,
            2,
            1,
        ),
    ],
    ids=[
        "all-received-once",
        "only-an-earlier-completion",
        "nothing-but-a-resend",
        "in-flight-at-two-kills",
        "twice-in-one-run",
        "two-resends-from-one-run",
        "one-resend-per-channel",
        "webhook-sessions-in-flight-together",
        "two-slack-resends-from-one-run",
    ],
)
def test_judge_counts_lost_facts_and_duplicates_and_flags_impossible_ones(
    receipts: list[Receipt], lost: int, duplicates: int, unexplained: int
) -> None:
    """Lost = owed facts never received; a resend must come from a killed run, one per lane:
    a webhook session, or the paced Slack webhook as a whole."""
    verdict = judge(OWED, receipts, RUNS)
    assert (len(verdict.lost), verdict.duplicates, len(verdict.unexplained)) == (
        lost,
        duplicates,
        unexplained,
    )
    assert verdict.delivered == len(OWED) - lost


def test_resends_are_attributed_to_the_run_that_had_them_in_flight() -> None:
    """A key received in runs 0, 1 and 2 was in flight at the kills of runs 0 and 1."""
    receipts = [hook("a", "ses-1", DISCOVERED, run) for run in (0, 1, 2)]
    assert judge([], receipts, RUNS).resent_from == {0: 1, 1: 1}


def test_a_resend_after_a_clean_stop_is_unexplained() -> None:
    """A clean stop leaves nothing in flight, so a later resend of its sends is a bug."""
    runs = [RunRecord(0, killed=False), RunRecord(1, killed=True)]
    receipts = [hook("a", "ses-1", DISCOVERED, 0), hook("a", "ses-1", DISCOVERED, 1)]
    assert len(judge([], receipts, runs).unexplained) == 1


@pytest.mark.parametrize(
    ("rows", "events", "problems"),
    [
        ([OutboxRecord(1, "a", "ci", "delivered", "ses-1", COMPLETED)], {"a"}, 0),
        ([OutboxRecord(1, "a", "ci", "pending", "ses-1", COMPLETED)], {"a"}, 1),
        ([OutboxRecord(1, "a", "ci", "dead", "ses-1", COMPLETED, "HTTP 500")], {"a"}, 1),
        ([OutboxRecord(1, "z", "ci", "delivered", "ses-1", COMPLETED)], {"a", "z"}, 1),
        ([OutboxRecord(1, "b", "ops", "delivered", "ses-1", ARCHIVED)], {"a", "b"}, 0),
        ([OutboxRecord(1, "c", "ops", "delivered", "ses-1", DELETED)], {"a", "c"}, 1),
        ([], set(), 1),
    ],
    ids=[
        "consistent",
        "pending",
        "dead",
        "delivered-never-received",
        "slack-received",
        "slack-never-received",
        "received-unknown-to-store",
    ],
)
def test_store_cross_check(rows: list[OutboxRecord], events: set[str], problems: int) -> None:
    """Every row delivered, every delivered row received, every received event stored."""
    receipts = [
        hook("a", "ses-1", COMPLETED, 0, 1),
        Receipt(S, f"ses-1:{ARCHIVED}", "ses-1", ARCHIVED, 0),
    ]
    assert len(check_store(rows, frozenset(events), receipts)) == problems


# --- the real thing, CI-sized -------------------------------------------------------------


@pytest.mark.slow
def test_harness_kills_the_daemon_eight_times_and_loses_nothing(tmp_path: Path) -> None:
    """Eight SIGKILLs (random and at failpoints), a clean drain: lost=0, exit 0."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "crash.py"),
            "--kills",
            "8",
            "--sessions",
            "3",
            "--seed",
            "7",
            "--workdir",
            str(tmp_path / "crash"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    output = result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, output
    assert re.fullmatch(r"lost=0 duplicates=\d+ runs=9", last), output
    assert re.search(r"^kills: .*\(total 8\)", result.stdout, re.MULTILINE), output
