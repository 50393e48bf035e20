"""The outbox: due rows per (target, session) lane, delivery marks, dead letters.

A backend gives its statements as an `OutboxSql` (`outbox_sql`): how it finds
each lane's head, and what else a mark resets (the PostgreSQL store's claim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from watcher.core.outbox import OutboxStatus
from watcher.core.text import describe_error
from watcher.store.codec import event_from_json
from watcher.store.rows import OutboxRow, UnreadableRow
from watcher.store.tables.base import TableBase, maybe_moment, moment, seconds

# Constant SQL; every value is a bound parameter.
SELECT_ROWS = (
    "SELECT o.id, e.body, o.rule, o.target, o.status, o.attempts, o.created_at,"
    " o.next_attempt_at, o.last_error, o.finished_at, e.id, e.type, e.session_id,"
    " e.sequence"
    " FROM outbox o JOIN events e ON e.id = o.event_id"
)


class OutboxSql(NamedTuple):
    """One backend's outbox statements, composed once (`outbox_sql`)."""

    due: str
    next_due: str
    delivered: str
    retry: str
    dead: str
    retry_dead: str
    purge: str


def outbox_sql(heads: str, any_id: str, reset: str = "") -> OutboxSql:
    """One backend's outbox statements, composed once at class definition.

    `heads` selects the ids of one target's lane heads (its one parameter),
    `any_id` is the backend's `TableBase._ANY_ID`, `reset` more `, column = value`
    pairs every mark sets.
    """
    return OutboxSql(
        due=SELECT_ROWS + " WHERE o.id IN (" + heads + ") AND o.next_attempt_at <= ?"
        " ORDER BY o.id LIMIT ?",
        next_due="SELECT MIN(next_attempt_at) FROM outbox WHERE id IN (" + heads + ")",  # noqa: S608
        delivered="UPDATE outbox SET status = 'delivered', attempts = attempts + 1,"  # noqa: S608
        " finished_at = ?, handle = ?, last_error = NULL" + reset + " WHERE id = ?",
        retry="UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?,"  # noqa: S608
        " last_error = ?" + reset + " WHERE id = ?",
        dead="UPDATE outbox SET status = 'dead', attempts = attempts + 1, finished_at = ?,"  # noqa: S608
        " last_error = ?" + reset + " WHERE id = ?",
        retry_dead="UPDATE outbox SET status = 'pending', attempts = 0, created_at = ?,"  # noqa: S608
        " next_attempt_at = ?, finished_at = NULL"
        + reset
        + " WHERE status = 'dead' AND (? OR id "
        + any_id
        + ")",
        purge="DELETE FROM outbox WHERE status = ? AND (? OR id " + any_id + ")",  # noqa: S608
    )


def outbox_row(r: Sequence[Any]) -> OutboxRow | UnreadableRow:
    """One outbox row from `SELECT_ROWS`; a body that cannot be decoded never raises."""
    status = OutboxStatus(r[4])
    created_at = moment(r[6])
    try:
        event = event_from_json(r[1], r[13])
    except Exception as error:  # any stored body, however broken, is one bad row
        return UnreadableRow(
            id=r[0],
            event_id=r[10],
            event_type=r[11],
            session_id=r[12],
            rule=r[2],
            target=r[3],
            status=status,
            attempts=r[5],
            created_at=created_at,
            last_error=r[8],
            reason=f"stored event cannot be read: {describe_error(error)}",
            error=error,
        )
    return OutboxRow(
        id=r[0],
        event=event,
        rule=r[2],
        target=r[3],
        status=status,
        attempts=r[5],
        created_at=created_at,
        next_attempt_at=moment(r[7]),
        last_error=r[8],
        finished_at=maybe_moment(r[9]),
    )


class OutboxTables(TableBase):
    """The outbox table, read in lane order and marked one row at a time."""

    _OUTBOX: ClassVar[OutboxSql]

    def _rows(self, sql: str, params: Sequence[Any]) -> list[OutboxRow | UnreadableRow]:
        return [outbox_row(r) for r in self._read_all(sql, params)]

    def due(self, target: str, now: datetime, limit: int) -> list[OutboxRow | UnreadableRow]:
        """Pending rows of `target` that may be sent now, oldest first.

        Only the oldest pending row of each (target, session) lane is eligible,
        so one session's notifications reach a target in order.
        """
        return self._rows(self._OUTBOX.due, (target, seconds(now), limit))

    def next_due(self, target: str) -> datetime | None:
        """When the earliest lane head of `target` becomes due, if any row is pending."""
        row = self._read_one(self._OUTBOX.next_due, (target,))
        return maybe_moment(row[0])

    def pending_lane(
        self, target: str, session_id: str, limit: int
    ) -> list[OutboxRow | UnreadableRow]:
        """Every pending row of one session for `target`, oldest first (a card's backlog)."""
        sql = SELECT_ROWS + (
            " WHERE o.target = ? AND o.lane = ? AND o.status = 'pending' ORDER BY o.id LIMIT ?"
        )
        return self._rows(sql, (target, session_id, limit))

    def mark_delivered(self, row_id: int, now: datetime, handle: str | None) -> None:
        """The destination accepted the row."""
        with self._transaction() as db:
            db.execute(self._OUTBOX.delivered, (seconds(now), handle, row_id))

    def mark_retry(self, row_id: int, at: datetime, error: str) -> None:
        """A failed attempt; the row stays pending until `at`."""
        with self._transaction() as db:
            db.execute(self._OUTBOX.retry, (seconds(at), error, row_id))

    def mark_dead(self, row_id: int, now: datetime, error: str) -> None:
        """Give up on a row; it stays listed as a dead letter with its last error."""
        with self._transaction() as db:
            db.execute(self._OUTBOX.dead, (seconds(now), error, row_id))

    def list_outbox(
        self, status: OutboxStatus | None = None, limit: int = 1000
    ) -> list[OutboxRow | UnreadableRow]:
        """Outbox rows, newest first, optionally of one status."""
        if status is None:
            return self._rows(SELECT_ROWS + " ORDER BY o.id DESC LIMIT ?", (limit,))
        return self._rows(
            SELECT_ROWS + " WHERE o.status = ? ORDER BY o.id DESC LIMIT ?", (str(status), limit)
        )

    def retry_dead(self, now: datetime, ids: Sequence[int] = ()) -> int:
        """Make dead letters pending again (all, or those in `ids`), attempts reset."""
        with self._transaction() as db:
            cursor = db.execute(
                self._OUTBOX.retry_dead, (seconds(now), seconds(now), not ids, self._list(ids))
            )
            return int(cursor.rowcount)

    def purge(self, status: OutboxStatus, ids: Sequence[int] = ()) -> int:
        """Delete delivered or dead rows (all of that status, or those in `ids`)."""
        if status is OutboxStatus.PENDING:
            raise ValueError("pending notifications cannot be purged")
        with self._transaction() as db:
            cursor = db.execute(self._OUTBOX.purge, (str(status), not ids, self._list(ids)))
            return int(cursor.rowcount)

    def counts(self) -> Mapping[OutboxStatus, int]:
        """How many outbox rows of each status."""
        rows = self._read_all("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        found = {OutboxStatus(s): n for s, n in rows}
        return {s: found.get(s, 0) for s in OutboxStatus}
