"""The outbox: due rows per (target, session) lane, claims, delivery marks, dead letters.

Unfenced (commands, a single replica) `due` reads as the SQLite store does.
Fenced (a leader among replicas) it claims: the due lane heads are locked
`FOR UPDATE SKIP LOCKED` and stamped with the leader's epoch. Only heads are
candidates, so a locked head skips its whole lane, never handing out a later
row of it. A takeover returns an older epoch's claims to pending
(`requeue_claimed`); those are the only rows that may be sent twice.
"""

from __future__ import annotations

from datetime import datetime

from watcher.store.postgres.base import PostgresBase, seconds
from watcher.store.rows import OutboxRow, UnreadableRow
from watcher.store.tables.outbox import SELECT_ROWS, outbox_row, outbox_sql
from watcher.store.tables.outbox import OutboxTables as SharedOutboxTables

__all__ = ["SELECT_ROWS", "OutboxTables"]

# The oldest pending row of each lane of one target.
_HEADS = (
    "SELECT DISTINCT ON (lane) id FROM outbox WHERE target = ? AND status = 'pending'"
    " ORDER BY lane, id"
)
_CLAIM = (
    "WITH claimed AS (UPDATE outbox SET claimed_epoch = ? WHERE id IN (SELECT id FROM outbox"  # noqa: S608
    " WHERE id IN (" + _HEADS + ") AND status = 'pending' AND next_attempt_at <= ?"
    " ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING id) "
    + SELECT_ROWS
    + " WHERE o.id IN (SELECT id FROM claimed) ORDER BY o.id"
)


class OutboxTables(SharedOutboxTables, PostgresBase):
    """The outbox table, read in lane order and marked one row at a time; claimed if fenced."""

    _OUTBOX = outbox_sql(_HEADS, PostgresBase._ANY_ID, PostgresBase._MARK_RESETS)

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]:
        """Pending lane heads of `target` that may be sent now, oldest first (claimed if fenced).

        Only the oldest pending row of each (target, session) lane is eligible,
        so one session's notifications reach a target in order.
        """
        if self._fenced:
            with self._transaction() as db:
                rows = db.execute(_CLAIM, (self._fence.epoch, target, seconds(now), limit))
                return [outbox_row(r) for r in rows.fetchall()]
        return super().due(target, now, limit)

    def requeue_claimed(self, epoch: int) -> int:
        """Return pending rows claimed under an epoch before `epoch` to anyone; how many."""
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET claimed_epoch = NULL"
                " WHERE status = 'pending' AND claimed_epoch < ?",
                (epoch,),
            )
            return db.rowcount
