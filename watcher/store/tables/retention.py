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
transaction as the deletes (`pruned_in` reads them). A backend gives
`database_bytes`, which it reads its own way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Container, Mapping
from datetime import datetime
from typing import Any

from watcher.core.outbox import OutboxStatus
from watcher.store.rows import Pruned
from watcher.store.tables.base import SEQUENCE_FLOOR, TableBase, maybe_moment, seconds

PRUNED_KEY = "rows_pruned."  # meta keys of the running totals, one per table

# An event goes only when nothing refers to it any more.
_UNREFERENCED = (
    "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = events.id)"
    " AND NOT EXISTS (SELECT 1 FROM held h WHERE h.event_id = events.id)"
)
# A forgotten session's rows in the small tables, deleted with its state (constant names).
_SESSION_DELETES = {
    table: f"DELETE FROM {table} WHERE session_id = ?"  # noqa: S608 (constant names)
    for table in ("rule_memory", "decisions", "polls", "discovered", "cards", "sessions_set_aside")
}


def _add_totals(db: Any, counts: Mapping[str, int]) -> None:
    """Add `counts` to the running totals in meta (same transaction as the deletes)."""
    rows = [(PRUNED_KEY + table, str(n)) for table, n in sorted(counts.items()) if n]
    if rows:
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            " SET value = CAST(CAST(meta.value AS BIGINT)"
            " + CAST(EXCLUDED.value AS BIGINT) AS TEXT)",
            rows,
        )


def pruned_in(meta: Mapping[str, str]) -> dict[str, int]:
    """The running totals of pruned rows per table, from the `meta` rows."""
    return {
        key.removeprefix(PRUNED_KEY): int(value)
        for key, value in meta.items()
        if key.startswith(PRUNED_KEY)
    }


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {table: n for table, n in sorted(counts.items()) if n}


class RetentionTables(TableBase):
    """Pruning batches, the watch set's marks, and the figures they leave behind."""

    def pruned_totals(self) -> dict[str, int]:
        """Rows pruned so far per table, over the database's whole life."""
        # meta is a few keys: read whole, decoded as `status` decodes it.
        return pruned_in(dict(self._read_all("SELECT key, value FROM meta")))

    def note_watched(self, session_ids: Collection[str], now: datetime) -> None:
        """The watch set is `session_ids`: others are unwatched from `now` on (unless they
        already were); those in it are watched again."""
        watched = self._list(sorted(session_ids))
        with self._transaction() as db:
            db.execute(
                "UPDATE sessions SET unwatched_since = NULL"  # noqa: S608 (a dialect constant)
                " WHERE unwatched_since IS NOT NULL AND session_id " + self._ANY_TEXT,
                (watched,),
            )
            db.execute(
                "UPDATE sessions SET unwatched_since = ? WHERE unwatched_since IS NULL"  # noqa: S608
                " AND NOT (session_id " + self._ANY_TEXT + ")",
                (seconds(now), watched),
            )

    def unwatched_since(self, session_id: str) -> datetime | None:
        """When `session_id` left the watch set (None: watched, or not stored)."""
        row = self._read_one(
            "SELECT unwatched_since FROM sessions WHERE session_id = ?", (session_id,)
        )
        return None if row is None else maybe_moment(row[0])

    def prune_finished(self, status: OutboxStatus, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` outbox rows of `status` finished before `before`, and the
        events only they referred to."""
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications are never pruned")
        with self._transaction() as db:
            rows = db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE status = ?"
                " AND finished_at <= ? ORDER BY finished_at LIMIT ?) RETURNING id, event_id",
                (str(status), seconds(before), limit),
            ).fetchall()
            counts = {"outbox": len(rows), "events": self._drop_events(db, {r[1] for r in rows})}
            _add_totals(db, counts)
        return Pruned(_nonzero(counts), more=len(rows) >= limit)

    def prune_events(self, before: datetime, limit: int) -> Pruned:
        """Delete up to `limit` events recorded before `before` that nothing refers to."""
        with self._transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM events WHERE recorded_at <= ? AND "  # noqa: S608
                    + _UNREFERENCED
                    + " ORDER BY recorded_at LIMIT ?",
                    (seconds(before), limit),
                ).fetchall()
            ]
            counts = {"events": self._drop_events(db, ids)}
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

    def _drop_events(self, db: Any, event_ids: Collection[str]) -> int:
        """Delete those of `event_ids` nothing refers to any more; how many."""
        if not event_ids:
            return 0
        cursor = db.execute(
            "DELETE FROM events WHERE " + _UNREFERENCED + " AND id " + self._ANY_TEXT,  # noqa: S608
            (self._list(sorted(event_ids)),),
        )
        return int(cursor.rowcount)

    def _forget_one(
        self, db: Any, session_id: str, now: datetime, budget: int, counts: Counter[str]
    ) -> bool:
        """Delete one session's rows within `budget` events; True when it is wholly gone."""
        args = (session_id,)
        counts["held"] += db.execute(
            "DELETE FROM held WHERE event_id IN (SELECT id FROM events WHERE session_id = ?)",
            args,
        ).rowcount
        order = self._INSERTION_ORDER
        deleted = int(
            db.execute(
                f"DELETE FROM events WHERE {order} IN (SELECT {order} FROM events"  # noqa: S608
                " WHERE session_id = ? AND " + _UNREFERENCED + " LIMIT ?)",
                (session_id, budget),
            ).rowcount
        )
        counts["events"] += deleted
        if deleted >= budget:
            return False  # more events: the state stays until the next batch
        for table, sql in _SESSION_DELETES.items():
            counts[table] += db.execute(sql, args).rowcount
        counts["mutes"] += db.execute(
            "DELETE FROM mutes WHERE kind = 'session' AND value = ? AND until <= ?",
            (session_id, seconds(now)),
        ).rowcount
        counts["sessions"] += db.execute("DELETE FROM sessions WHERE session_id = ?", args).rowcount
        lane = db.execute("DELETE FROM sequences WHERE lane = ? RETURNING last", args).fetchone()
        if lane is not None:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
                " value = CASE WHEN CAST(meta.value AS BIGINT) >= CAST(EXCLUDED.value AS BIGINT)"
                " THEN meta.value ELSE EXCLUDED.value END",
                (SEQUENCE_FLOOR, str(lane[0])),
            )
            counts["sequences"] += 1
        return True
