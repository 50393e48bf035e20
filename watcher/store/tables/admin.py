"""Housekeeping and figures: poll marks and the daemon's meta, outbox depth for metrics."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from watcher.store.rows import OutboxFigures, PollMark
from watcher.store.tables.base import TableBase, maybe_moment, seconds


class AdminTables(TableBase):
    """What `status` and the metrics read, and the daemon's batched bookkeeping."""

    def record_housekeeping(
        self,
        polls: Sequence[PollMark],
        meta: Mapping[str, str],
        watched: Collection[str] | None = None,
    ) -> None:
        """Store the latest poll of each session in `polls` and the daemon's `meta` values.

        One transaction for the whole batch: the daemon calls this every few
        seconds instead of writing once per poll, and its success is also the
        proof that the store is writable. With `watched` (the watch list
        changed), the poll marks of every other session are dropped: only
        watched sessions are shown, and a table of them alone keeps `status`
        reading the same few pages however many sessions came and went.
        """
        with self._transaction() as db:
            if watched is not None:
                db.execute(
                    "DELETE FROM polls WHERE NOT (session_id "  # noqa: S608 (a dialect constant)
                    + self._ANY_TEXT
                    + ")",
                    (self._list(sorted(watched)),),
                )
            if polls:
                db.executemany(
                    "INSERT INTO polls(session_id, polled_at, outcome, next_poll_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET"
                    " polled_at = EXCLUDED.polled_at, outcome = EXCLUDED.outcome,"
                    " next_poll_at = EXCLUDED.next_poll_at",
                    [
                        (
                            p.session_id,
                            seconds(p.polled_at),
                            p.outcome,
                            None if p.next_poll_at is None else seconds(p.next_poll_at),
                        )
                        for p in polls
                    ],
                )
            if meta:
                db.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    sorted(meta.items()),
                )

    def outbox_figures(self, targets: Sequence[str]) -> OutboxFigures:
        """Pending and dead rows of each target and the oldest pending row (index scans only)."""
        pending: dict[str, int] = {}
        dead: dict[str, int] = {}
        oldest: float | None = None
        with self._reading() as db:
            for target in targets:
                row = db.execute(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox"
                    " WHERE target = ? AND status = 'pending'",
                    (target,),
                ).fetchone()
                count, first = row if row else (0, None)
                pending[target] = count
                if first is not None and (oldest is None or first < oldest):
                    oldest = first
                found = db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE target = ? AND status = 'dead'", (target,)
                ).fetchone()
                dead[target] = found[0] if found else 0
        return OutboxFigures(pending, dead, maybe_moment(oldest))
