"""The outbox: due rows per (target, session) lane, claims, delivery marks, dead letters.

Unfenced (commands, a single replica) `due` reads as the SQLite store does.
Fenced (a leader among replicas) it claims: the due lane heads are locked
`FOR UPDATE SKIP LOCKED` and stamped with the leader's epoch. Only heads are
candidates, so a locked head skips its whole lane, never handing out a later
row of it. A takeover returns an older epoch's claims to pending
(`requeue_claimed`); those are the only rows that may be sent twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from watcher.core.outbox import OutboxStatus
from watcher.store.postgres.base import PostgresBase, maybe_moment, seconds
from watcher.store.rows import OutboxRow, UnreadableRow
from watcher.store.sqlite.outbox import outbox_row

# Constant SQL; every value is a bound parameter.
SELECT_ROWS = (
    "SELECT o.id, e.body, o.rule, o.target, o.status, o.attempts, o.created_at,"
    " o.next_attempt_at, o.last_error, o.finished_at, e.id, e.type, e.session_id,"
    " e.sequence"
    " FROM outbox o JOIN events e ON e.id = o.event_id"
)
# The oldest pending row of each lane of one target.
_HEADS = (
    "SELECT DISTINCT ON (lane) id FROM outbox WHERE target = %s AND status = 'pending'"
    " ORDER BY lane, id"
)
_CLAIM = (
    "WITH claimed AS (UPDATE outbox SET claimed_epoch = %s WHERE id IN (SELECT id FROM outbox"  # noqa: S608
    " WHERE id IN (" + _HEADS + ") AND status = 'pending' AND next_attempt_at <= %s"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id) "
    + SELECT_ROWS
    + " WHERE o.id IN (SELECT id FROM claimed) ORDER BY o.id"
)


class OutboxTables(PostgresBase):
    """The outbox table, read in lane order and marked one row at a time."""

    def _rows(self, sql: str, params: Sequence[Any]) -> list[OutboxRow | UnreadableRow]:
        return [outbox_row(r) for r in self._read_all(sql, params)]

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]:
        """Pending lane heads of `target` that may be sent now, oldest first (claimed if fenced).

        Only the oldest pending row of each (target, session) lane is eligible,
        so one session's notifications reach a target in order.
        """
        if self._fenced:
            with self._transaction() as db:
                rows = db.execute(_CLAIM, (self._fence.epoch, target, seconds(now), limit))
                return [outbox_row(r) for r in rows.fetchall()]
        sql = (
            SELECT_ROWS
            + " WHERE o.id IN ("
            + _HEADS
            + ") AND o.next_attempt_at <= %s ORDER BY o.id LIMIT %s"
        )
        return self._rows(sql, (target, seconds(now), limit))

    def next_due(self, target: str) -> datetime | None:
        """When the earliest lane head of `target` becomes due, if any row is pending."""
        row = self._read_one(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN (" + _HEADS + ")",  # noqa: S608
            (target,),
        )
        return maybe_moment(row[0])

    def pending_lane(
        self, target: str, session_id: str, limit: int
    ) -> list[OutboxRow | UnreadableRow]:
        """Every pending row of one session for `target`, oldest first (a card's backlog)."""
        sql = SELECT_ROWS + (
            " WHERE o.target = %s AND o.lane = %s AND o.status = 'pending' ORDER BY o.id LIMIT %s"
        )
        return self._rows(sql, (target, session_id, limit))

    def requeue_claimed(self, epoch: int) -> int:
        """Return pending rows claimed under an epoch before `epoch` to anyone; how many."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET claimed_epoch = NULL"
                " WHERE status = 'pending' AND claimed_epoch < %s",
                (epoch,),
            )
            return db.rowcount

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None:
        """The destination accepted the row."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1,"
                " finished_at = %s, handle = %s, last_error = NULL, claimed_epoch = NULL"
                " WHERE id = %s",
                (seconds(now), handle, row_id),
            )

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None:
        """A failed attempt; the row stays pending until `at`."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = %s,"
                " last_error = %s, claimed_epoch = NULL WHERE id = %s",
                (seconds(at), error, row_id),
            )

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None:
        """Give up on a row; it stays listed as a dead letter with its last error."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, finished_at = %s,"
                " last_error = %s, claimed_epoch = NULL WHERE id = %s",
                (seconds(now), error, row_id),
            )

    def list_outbox(
        self, status: OutboxStatus | None = None, limit: int = 1000
    ) -> list[OutboxRow | UnreadableRow]:
        """Outbox rows, newest first, optionally of one status."""
        if status is None:
            return self._rows(SELECT_ROWS + " ORDER BY o.id DESC LIMIT %s", (limit,))
        return self._rows(
            SELECT_ROWS + " WHERE o.status = %s ORDER BY o.id DESC LIMIT %s", (str(status), limit)
        )

    def retry_dead(self, now: datetime, ids: Sequence[int] = ()) -> int:
        """Make dead letters pending again (all, or those in `ids`), attempts reset."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, created_at = %s,"
                " next_attempt_at = %s, finished_at = NULL, claimed_epoch = NULL"
                " WHERE status = 'dead' AND (%s OR id = ANY(%s::bigint[]))",
                (seconds(now), seconds(now), not ids, list(ids)),
            )
            return db.rowcount

    def purge(self, status: OutboxStatus, ids: Sequence[int] = ()) -> int:
        """Delete delivered or dead rows (all of that status, or those in `ids`)."""
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications cannot be purged")
        with self._transaction() as db:
            db.execute(
                "DELETE FROM outbox WHERE status = %s AND (%s OR id = ANY(%s::bigint[]))",
                (str(status), not ids, list(ids)),
            )
            return db.rowcount

    def counts(self) -> Mapping[OutboxStatus, int]:
        """How many outbox rows of each status."""
        rows = self._read_all("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        found = {OutboxStatus(s): n for s, n in rows}
        return {s: found.get(s, 0) for s in OutboxStatus}
