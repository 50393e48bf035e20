"""Retention: what the state no longer needs is deleted in small batches.

Three rules (`watcher.core.settings.Retention` sets their ages):
- delivered outbox rows finished before a cutoff, and dead letters before
  another, go with the events nothing else refers to any more;
- events no outbox row and no held notification refers to go once recorded
  before the delivered cutoff (those that matched no rule, released digests);
- a session not watched since before a cutoff is forgotten with its rows:
  state, rule memory, held notifications, decisions, cards, poll mark,
  discovered mark, expired mutes naming it, and its events nothing else
  refers to, and its `sequences` row: the highest number it held raises
  one floor in `meta` above which every new lane starts, so a session seen
  again numbers its events above any it had, with no row kept per session.

"Not watched since" is `sessions.unwatched_since`, kept by `note_watched`
from the daemon's watch set: a session in the set is watched whether or not
it is polled. Every call is one short transaction deleting at most about
`limit` rows, so a poll never waits long for the write lock; the running
totals per table are kept in `meta` (`rows_pruned.<table>`) in the same
transaction as the deletes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Collection, Container, Mapping
from datetime import datetime

from watcher.core.outbox import OutboxStatus
from watcher.store.rows import Pruned
from watcher.store.sqlite.base import SqliteBase, maybe_moment, seconds
from watcher.store.sqlite.events import SEQUENCE_FLOOR

PRUNED_KEY = "rows_pruned."  # meta keys of the running totals, one per table

# An event goes only when nothing refers to it any more.
_UNREFERENCED = (
    "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = events.id)"
    " AND NOT EXISTS (SELECT 1 FROM held h WHERE h.event_id = events.id)"
)
# A forgotten session's rows in the small tables, deleted with its state.
_SESSION_TABLES = ("rule_memory", "decisions", "polls", "discovered", "cards", "sessions_set_aside")


def _add_totals(db: sqlite3.Connection, counts: Mapping[str, int]) -> None:
    """Add `counts` to the running totals in meta (same transaction as the deletes)."""
    db.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
        " SET value = CAST(CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)",
        [(PRUNED_KEY + table, str(n)) for table, n in sorted(counts.items()) if n],
    )


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {table: n for table, n in sorted(counts.items()) if n}


def _drop_events(db: sqlite3.Connection, event_ids: Collection[str]) -> int:
    """Delete those of `event_ids` nothing refers to any more; how many."""
    before = db.total_changes
    db.executemany(
        "DELETE FROM events WHERE id=? AND " + _UNREFERENCED,  # noqa: S608 (constant SQL)
        [(event_id,) for event_id in event_ids],
    )
    return db.total_changes - before


class RetentionTables(SqliteBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def note_watched(self, session_ids: Collection[str], now: datetime) -> None:
        """The watch set is `session_ids`: every other stored session is unwatched from
        `now` on (unless it already was); those in it are watched again.

        Cost follows the watch set, not the history: stored sessions already
        unwatched are not visited.
        """
        watched = json.dumps(sorted(session_ids))
        with self._transaction() as db:
            db.executemany(
                "UPDATE sessions SET unwatched_since=NULL"
                " WHERE session_id=? AND unwatched_since IS NOT NULL",
                [(sid,) for sid in session_ids],
            )
            db.execute(
                "UPDATE sessions SET unwatched_since=? WHERE unwatched_since IS NULL"
                " AND session_id NOT IN (SELECT value FROM json_each(?))",
                (seconds(now), watched),
            )

    def unwatched_since(self, session_id: str) -> datetime | None:
        """When `session_id` left the watch set (None: watched, or not stored)."""
        row = self._read_one(
            "SELECT unwatched_since FROM sessions WHERE session_id=?", (session_id,)
        )
        return None if row is None else maybe_moment(row[0])

    def prune_finished(self, status: OutboxStatus, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` outbox rows of `status` (delivered or dead) finished
        before `before`, and the events only they referred to.
        """
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications are never pruned")
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, event_id FROM outbox WHERE status=? AND finished_at <= ?"
                " ORDER BY finished_at LIMIT ?",
                (str(status), seconds(before), limit),
            ).fetchall()
            db.executemany("DELETE FROM outbox WHERE id=?", [(r[0],) for r in rows])
            counts = {"outbox": len(rows), "events": _drop_events(db, {r[1] for r in rows})}
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=len(rows) >= limit)

    def prune_events(self, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` events recorded before `before` that nothing refers to.

        Events still referred to (pending or dead rows, held notifications) are
        looked at again on each call; there are few of them, bounded by what
        the outbox and the digests hold, not by the history.
        """
        with self._transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM events WHERE recorded_at <= ? AND "  # noqa: S608
                    + _UNREFERENCED
                    + " ORDER BY recorded_at LIMIT ?",
                    (seconds(before), limit),
                )
            ]
            counts = {"events": _drop_events(db, ids)}
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=len(ids) >= limit)

    def forget_sessions(
        self, before: datetime, watched: Container[str], now: datetime, limit: int
    ) -> Pruned:
        """Forget sessions unwatched since before `before`, about `limit` rows at a time.

        A session in `watched`, or whose state was written since `before` (a
        discovery that found it again has not been noted yet), is kept. A
        session with more events than fit in one batch keeps its state until
        the last batch, so it is never half forgotten yet unmarked.
        """
        cutoff = seconds(before)
        counts: Counter[str] = Counter()
        with self._transaction() as db:
            candidates = db.execute(
                "SELECT session_id FROM sessions WHERE unwatched_since <= ? AND stored_at <= ?"
                " ORDER BY unwatched_since LIMIT ?",
                (cutoff, cutoff, limit),
            ).fetchall()
            more = len(candidates) >= limit
            for (session_id,) in candidates:
                if session_id in watched:
                    continue
                budget = limit - counts.total()
                if budget <= 0 or not self._forget_one(db, session_id, now, budget, counts):
                    more = True  # this session or a later one is left for the next batch
                    break
            # Rows set aside as unreadable are kept for an operator to look at, as
            # long as a forgotten session's rows would have been.
            counts["sessions_set_aside"] += db.execute(
                "DELETE FROM sessions_set_aside WHERE set_aside_at <= ?", (cutoff,)
            ).rowcount
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=more)

    @staticmethod
    def _forget_one(
        db: sqlite3.Connection, session_id: str, now: datetime, budget: int, counts: Counter[str]
    ) -> bool:
        """Delete one session's rows within `budget` events; True when it is wholly gone."""
        args = (session_id,)
        counts["held"] += db.execute(
            "DELETE FROM held WHERE event_id IN (SELECT id FROM events WHERE session_id=?)", args
        ).rowcount
        deleted = db.execute(
            "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events"  # noqa: S608
            " WHERE session_id=? AND " + _UNREFERENCED + " LIMIT ?)",
            (session_id, budget),
        ).rowcount
        counts["events"] += deleted
        if deleted >= budget:
            return False  # more events: the state stays until the next batch
        for table in _SESSION_TABLES:
            counts[table] += db.execute(
                f"DELETE FROM {table} WHERE session_id=?",  # noqa: S608 (constant names)
                args,
            ).rowcount
        counts["mutes"] += db.execute(
            "DELETE FROM mutes WHERE kind='session' AND value=? AND until <= ?",
            (session_id, seconds(now)),
        ).rowcount
        counts["sessions"] += db.execute("DELETE FROM sessions WHERE session_id=?", args).rowcount
        lane = db.execute("SELECT last FROM sequences WHERE lane=?", args).fetchone()
        if lane is not None:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET"
                " value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (SEQUENCE_FLOOR, str(lane[0])),
            )
            counts["sequences"] += db.execute("DELETE FROM sequences WHERE lane=?", args).rowcount
        return True

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table, over the database's whole life."""
        rows = self._read_all(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
            (PRUNED_KEY, PRUNED_KEY[:-1] + chr(ord(PRUNED_KEY[-1]) + 1)),
        )
        return {key.removeprefix(PRUNED_KEY): int(value) for key, value in rows}

    def database_bytes(self) -> int:
        """The database's size: its pages (freed pages are reused, not returned)."""
        count = self._read_one("PRAGMA page_count")[0]
        size = self._read_one("PRAGMA page_size")[0]
        return int(count) * int(size)
