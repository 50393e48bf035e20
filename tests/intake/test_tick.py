"""The rule timer's work: a session whose evaluation raises is isolated and logged once."""

from __future__ import annotations

import logging
from collections.abc import Set
from datetime import UTC, datetime
from pathlib import Path

import pytest

from watcher.core.model import SessionState
from watcher.core.rulestate import Evaluation
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, Settings, WatchedSession
from watcher.intake.tick import apply_tick
from watcher.store import SqliteStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class DueStore(SqliteStore):
    """A store on which `due` sessions are due and reading `broken`'s state raises."""

    def __init__(self, due: list[str], broken: Set[str]) -> None:
        super().__init__(":memory:")
        self.due = due
        self.broken = set(broken)
        self.evaluated: list[str] = []

    def due_sessions(self, now: datetime) -> list[str]:
        """The sessions the test made due."""
        return list(self.due)

    def load_state(self, session_id: str) -> SessionState | None:
        """Raise for a broken session, as a bug in its evaluation would."""
        if session_id in self.broken:
            raise RuntimeError(f"boom in {session_id}")
        return super().load_state(session_id)

    def record_evaluation(self, session_id: str, evaluation: Evaluation, now: datetime) -> int:
        """Note which session's evaluation was committed (raise for a broken one)."""
        if session_id in self.broken:
            raise RuntimeError(f"boom in {session_id}")
        self.evaluated.append(session_id)
        return super().record_evaluation(session_id, evaluation, now)


SETTINGS = Settings(factory=FactorySettings(api_key=Secret("k")), state_path=Path(":memory:"))
WATCHED = {s: WatchedSession(s) for s in ("s1", "s2")}


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The rule timer's log records that carry a traceback at warning level or above."""
    return [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]


def test_raising_session_is_logged_once_while_it_keeps_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session that raises on every tick logs one traceback, not one per tick."""
    store = DueStore(["s1", "s2"], {"s1"})
    failing: set[str] = set()
    caplog.set_level(logging.DEBUG, logger="watcher.intake.tick")
    for _ in range(3):
        apply_tick(store, SETTINGS, WATCHED, NOW, failing)
    assert len(tracebacks(caplog)) == 1
    assert "s1" in tracebacks(caplog)[0].getMessage()
    assert failing == {"s1"}


def test_recovered_session_is_announced_and_logs_again_if_it_fails_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once a failing session evaluates again a line says so, and a new failure logs again."""
    store = DueStore(["s1"], {"s1"})
    failing: set[str] = set()
    caplog.set_level(logging.INFO, logger="watcher.intake.tick")
    apply_tick(store, SETTINGS, WATCHED, NOW, failing)
    store.broken.clear()
    apply_tick(store, SETTINGS, WATCHED, NOW, failing)
    assert failing == set()
    assert any("evaluates session s1 again" in r.getMessage() for r in caplog.records)
    store.broken.add("s1")
    apply_tick(store, SETTINGS, WATCHED, NOW, failing)
    assert len(tracebacks(caplog)) == 2


def test_other_sessions_still_evaluate_when_one_raises() -> None:
    """One raising session does not stop the tick: the next one is evaluated and committed."""
    store = DueStore(["s1", "s2"], {"s1"})
    apply_tick(store, SETTINGS, WATCHED, NOW)
    assert store.evaluated == ["s2"]


def test_without_a_failing_set_every_call_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Called without the caller's set (the one-shot path), each call logs its traceback."""
    store = DueStore(["s1"], {"s1"})
    apply_tick(store, SETTINGS, WATCHED, NOW)
    apply_tick(store, SETTINGS, WATCHED, NOW)
    assert len(tracebacks(caplog)) == 2


def test_an_unwatched_session_whose_wake_up_cannot_be_cleared_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A due session no longer watched whose wake-up cannot be cleared stays due: it logs
    one traceback, not one per tick, and the watched sessions are still evaluated."""
    store = DueStore(["gone", "s2"], {"gone"})
    failing: set[str] = set()
    caplog.set_level(logging.DEBUG, logger="watcher.intake.tick")
    for _ in range(3):
        apply_tick(store, SETTINGS, WATCHED, NOW, failing)
    assert len(tracebacks(caplog)) == 1
    assert "gone" in tracebacks(caplog)[0].getMessage()
    assert failing == {"gone"}
    assert store.evaluated == ["s2"] * 3
