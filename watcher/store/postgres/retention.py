"""Retention: what the state no longer needs is deleted in small batches.

The same three rules, batches and running totals (`meta`
`rows_pruned.<table>`) as the SQLite store (see
`watcher.store.sqlite.retention`): finished outbox rows with the events only
they used, unreferenced events, and sessions unwatched since before a cutoff
with every row of theirs; a forgotten lane's highest number raises the
sequence floor so a session seen again never reuses one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Container, Mapping
from datetime import datetime
from typing import Any

import psycopg

from watcher.core.outbox import OutboxStatus
from watcher.store.postgres.base import PostgresBase, maybe_moment, seconds
from watcher.store.postgres.events import SEQUENCE_FLOOR
from watcher.store.rows import Pruned

PRUNED_KEY = "rows_pruned."  # meta keys of the running totals, one per table

# An event goes only when nothing refers to it any more.
_UNREFERENCED = (
    "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = events.id)"
    " AND NOT EXISTS (SELECT 1 FROM held h WHERE h.event_id = events.id)"
)
# A forgotten session's rows in the small tables, deleted with its state (constant names).
_SESSION_DELETES = {
    table: f"DELETE FROM {table} WHERE session_id = %s"  # noqa: S608 (constant names)
    for table in ("rule_memory", "decisions", "polls", "discovered", "cards", "sessions_set_aside")
}


def _add_totals(db: psycopg.Cursor[Any], counts: Mapping[str, int]) -> None:
    """Add `counts` to the running totals in meta (same transaction as the deletes)."""
    rows = [(PRUNED_KEY + table, str(n)) for table, n in sorted(counts.items()) if n]
    if rows:
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE"
            " SET value = (meta.value::bigint + EXCLUDED.value::bigint)::text",
            rows,
        )


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {table: n for table, n in sorted(counts.items()) if n}


def _drop_events(db: psycopg.Cursor[Any], event_ids: Collection[str]) -> int:
    """Delete those of `event_ids` nothing refers to any more; how many."""
    if not event_ids:
        return 0
    db.execute(
        "DELETE FROM events WHERE id = ANY(%s::text[]) AND " + _UNREFERENCED,  # noqa: S608
        (sorted(event_ids),),
    )
    return db.rowcount


class RetentionTables(PostgresBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def note_watched(self, session_ids: Collection[str], now: datetime) -> None:
        """The watch set is `session_ids`: others are unwatched from `now` on (unless they
        already were); those in it are watched again."""
        watched = sorted(session_ids)
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET unwatched_since = NULL"
                " WHERE session_id = ANY(%s::text[]) AND unwatched_since IS NOT NULL",
                (watched,),
            )
            db.execute(
                "UPDATE sessions SET unwatched_since = %s WHERE unwatched_since IS NULL"
                " AND session_id <> ALL(%s::text[])",
                (seconds(now), watched),
            )

    def unwatched_since(self, session_id: str) -> datetime | None:
        """When `session_id` left the watch set (None: watched, or not stored)."""
        row = self._read_one(
            "SELECT unwatched_since FROM sessions WHERE session_id = %s", (session_id,)
        )
        return None if row is None else maybe_moment(row[0])

    def prune_finished(self, status: OutboxStatus, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` outbox rows of `status` finished before `before`, and the
        events only they referred to."""
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications are never pruned")
        with self._transaction() as db:
            rows = db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = %s"
                " AND finished_at <= %s ORDER BY finished_at LIMIT %s) RETURNING id, event_id",
                (str(status), seconds(before), limit),
            ).fetchall()
            counts = {"outbox": len(rows), "events": _drop_events(db, {r[1] for r in rows})}
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=len(rows) >= limit)

    def prune_events(self, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` events recorded before `before` that nothing refers to."""
        with self._transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM events WHERE recorded_at <= %s AND "  # noqa: S608
                    + _UNREFERENCED
                    + " ORDER BY recorded_at LIMIT %s",
                    (seconds(before), limit),
                ).fetchall()
            ]
            counts = {"events": _drop_events(db, ids)}
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=len(ids) >= limit)

    def forget_sessions(
        self, before: datetime, watched: Container[str], now: datetime, limit: int
    ) -> Pruned:
        """Forget sessions unwatched since before `before`, about `limit` rows at a time.

        A session in `watched`, or whose state was written since `before`, is
        kept; one with more events than fit in a batch keeps its state until
        the last batch.
        """
        cutoff = seconds(before)
        counts: Counter[str] = Counter()
        with self._transaction() as db:
            candidates = db.execute(
                "SELECT session_id FROM sessions WHERE unwatched_since <= %s AND stored_at <= %s"
                " ORDER BY unwatched_since LIMIT %s",
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
            db.execute("DELETE FROM sessions_set_aside WHERE set_aside_at <= %s", (cutoff,))
            counts["sessions_set_aside"] += db.rowcount
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=more)

    @staticmethod
    def _forget_one(
        db: psycopg.Cursor[Any], session_id: str, now: datetime, budget: int, counts: Counter[str]
    ) -> bool:
        """Delete one session's rows within `budget` events; True when it is wholly gone."""
        args = (session_id,)
        db.execute(
            "DELETE FROM held WHERE event_id IN (SELECT id FROM events WHERE session_id = %s)",
            args,
        )
        counts["held"] += db.rowcount
        db.execute(
            "DELETE FROM events WHERE pos IN (SELECT pos FROM events"  # noqa: S608
            " WHERE session_id = %s AND " + _UNREFERENCED + " LIMIT %s)",
            (session_id, budget),
        )
        deleted = db.rowcount
        counts["events"] += deleted
        if deleted >= budget:
            return False  # more events: the state stays until the next batch
        for table, sql in _SESSION_DELETES.items():
            db.execute(sql, args)
            counts[table] += db.rowcount
        db.execute(
            "DELETE FROM mutes WHERE kind = 'session' AND value = %s AND until <= %s",
            (session_id, seconds(now)),
        )
        counts["mutes"] += db.rowcount
        db.execute("DELETE FROM sessions WHERE session_id = %s", args)
        counts["sessions"] += db.rowcount
        lane = db.execute("DELETE FROM sequences WHERE lane = %s RETURNING last", args).fetchone()
        if lane is not None:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET"
                " value = GREATEST(meta.value::bigint, EXCLUDED.value::bigint)::text",
                (SEQUENCE_FLOOR, str(lane[0])),
            )
            counts["sequences"] += 1
        return True

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table, over the database's whole life."""
        rows = self._read_all(
            "SELECT key, value FROM meta WHERE starts_with(key, %s)", (PRUNED_KEY,)
        )
        return {key.removeprefix(PRUNED_KEY): int(value) for key, value in rows}

    def database_bytes(self) -> int:
        """The database's size on disk (`pg_database_size`)."""
        return int(self._read_one("SELECT pg_database_size(current_database())")[0])
