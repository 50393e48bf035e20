"""The rules' tables: memory and wake times, held notifications, mutes, decisions.

The rule engine's types are imported where a row is built, not at module
level: `outbox list` opens the store and should not pay for the rule engine.
Events are numbered and stored through the backend's `EventWriter`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from watcher.core.model import Event
from watcher.core.text import describe_error
from watcher.store.codec import event_from_json, memory_from_json
from watcher.store.rows import DecisionRow, HeldRow
from watcher.store.tables.base import maybe_moment, moment, seconds
from watcher.store.tables.events import DECISIONS_KEPT_PER_SESSION, EventWriter

__all__ = ["DECISIONS_KEPT_PER_SESSION", "RuleTables"]

if TYPE_CHECKING:
    from watcher.core.rules import Route
    from watcher.core.rulestate import Evaluation, Mute, MuteKind, SessionMemory

log = logging.getLogger("watcher.store")


class RuleTables(EventWriter):
    """Rule memory, held digests, mutes and decisions."""

    def load_memory(self, session_id: str) -> SessionMemory:
        """What rule evaluation remembers about a session (empty if nothing yet)."""
        from watcher.core.rulestate import SessionMemory  # noqa: PLC0415 (see the module)

        row = self._read_one("SELECT memory FROM rule_memory WHERE session_id = ?", (session_id,))
        if row is None:
            return SessionMemory()
        try:
            return memory_from_json(row[0])
        except Exception as error:  # any stored text, however broken, is one bad row
            # One unreadable row must not stop this session's polls: its rules start afresh.
            log.warning(
                "rule memory of %s is unreadable (%s); starting it afresh",
                session_id,
                describe_error(error),
            )
            return SessionMemory()

    def record_evaluation(self, session_id: str, evaluation: Evaluation, now: datetime) -> int:
        """Store a timer evaluation (no new snapshot): memory, events, outbox rows, held."""
        with self._transaction() as db:
            new = self._insert_events(db, evaluation.events, evaluation.routes, now)
            self._write_evaluation(db, session_id, evaluation, now)
            return new

    def due_sessions(self, now: datetime) -> list[str]:
        """Sessions whose rules asked to be woken at or before `now`."""
        rows = self._read_all(
            "SELECT session_id FROM rule_memory WHERE wake_at <= ? ORDER BY wake_at",
            (seconds(now),),
        )
        return [r[0] for r in rows]

    def due_held(self, now: datetime) -> list[HeldRow]:
        """Held notifications whose quiet-hours window has ended, in the order they were held.

        A held row whose stored event cannot be read back cannot be listed in a
        digest: it becomes a dead letter of its target with the reason, so it
        stays visible in `outbox list` and the timer does not trip on it again.
        """
        from watcher.core.rulestate import Held  # noqa: PLC0415 (see the module)

        rows = self._read_all(
            "SELECT h.id, h.target, h.quiet_window, h.release_at, e.body, h.rule, e.sequence,"
            " h.event_id FROM held h JOIN events e ON e.id = h.event_id"
            " WHERE h.release_at <= ? ORDER BY h.id",
            (seconds(now),),
        )
        due: list[HeldRow] = []
        unreadable: list[tuple[int, str, str, str, str]] = []
        for r in rows:
            try:
                event = event_from_json(r[4], r[6])
            except Exception as error:  # any stored body, however broken, is one bad row
                reason = f"stored event cannot be read: {describe_error(error)}"
                unreadable.append((r[0], r[7], r[1], r[5], reason))
                continue
            due.append(HeldRow(r[0], Held(r[1], r[2], moment(r[3]), event, r[5])))
        if unreadable:
            self._bury_held(unreadable, now)
        return due

    def _bury_held(self, rows: Sequence[tuple[int, str, str, str, str]], now: datetime) -> None:
        stamp = seconds(now)
        with self._transaction() as db:
            for held_id, event_id, target, rule, reason in rows:
                log.error(
                    "held notification %s -> %s is a dead letter: %s", event_id, target, reason
                )
                db.execute(
                    "INSERT INTO outbox(event_id, target, rule, lane, status, attempts,"
                    " created_at, next_attempt_at, last_error, finished_at)"
                    " VALUES (?, ?, ?, '', 'dead', 0, ?, ?, ?, ?)"
                    " ON CONFLICT (event_id, target) DO NOTHING",
                    (event_id, target, rule, stamp, stamp, reason, stamp),
                )
                db.execute("DELETE FROM held WHERE id = ?", (held_id,))

    def release_digests(
        self, digests: Sequence[tuple[Event, Route]], held_ids: Sequence[int], now: datetime
    ) -> int:
        """Queue digests and forget the held rows they list, in one transaction."""
        with self._transaction() as db:
            new = self._insert_events(db, [e for e, _ in digests], digests, now)
            if held_ids:
                held = "DELETE FROM held WHERE id " + self._ANY_ID  # noqa: S608 (a dialect constant)
                db.execute(held, (self._list(held_ids),))
            return new

    def next_wake(self) -> datetime | None:
        """The earliest time a rule asked to be woken or a held digest is due, if any."""
        row = self._read_one(
            "SELECT MIN(t) FROM (SELECT MIN(wake_at) AS t FROM rule_memory"
            " UNION ALL SELECT MIN(release_at) FROM held) AS wakes"
        )
        return maybe_moment(row[0])

    def held_count(self) -> int:
        """How many notifications wait for a digest."""
        return int(self._read_one("SELECT COUNT(*) FROM held")[0])

    def add_mute(self, mute: Mute, now: datetime) -> int:
        """Store a mute; returns its id."""
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO mutes(kind, value, until, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING id",
                (
                    str(mute.kind),
                    mute.value,
                    None if mute.until is None else seconds(mute.until),
                    mute.reason,
                    seconds(now),
                ),
            ).fetchone()
            return int(row[0]) if row else 0

    def remove_mutes(self, kind: MuteKind, value: str) -> int:
        """Delete the mutes of `kind` on `value`; returns how many there were."""
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM mutes WHERE kind = ? AND value = ?", (str(kind), value)
            )
            return int(cursor.rowcount)

    def active_mutes(self, now: datetime) -> list[Mute]:
        """Mutes in force at `now`, oldest first."""
        from watcher.core.rulestate import Mute, MuteKind  # noqa: PLC0415 (see the module)

        rows = self._read_all(
            "SELECT id, kind, value, until, reason FROM mutes"
            " WHERE until IS NULL OR until > ? ORDER BY id",
            (seconds(now),),
        )
        return [Mute(MuteKind(r[1]), r[2], maybe_moment(r[3]), r[4], r[0]) for r in rows]

    def recent_decisions(self, session_id: str, limit: int = 50) -> list[DecisionRow]:
        """The latest rule decisions about a session, oldest first."""
        from watcher.core.rulestate import Outcome  # noqa: PLC0415 (see the module)

        rows = self._read_all(
            "SELECT at, rule, event_id, event_type, outcome, reason FROM decisions"
            " WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            (session_id, limit),
        )
        return [
            DecisionRow(moment(r[0]), r[1], r[2], r[3], Outcome(r[4]), r[5]) for r in reversed(rows)
        ]
