"""What `status` reads, on either backend's read-only connection, and its rows assembled.

The outbox: pending and dead rows only, each through its partial index, so
`status` costs the same however many rows were ever delivered. No
placeholders: the SQL runs as it is on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from watcher.store.rows import DeadLetterRow, LeaseRow, PollMark, StatusRows, TargetBacklog
from watcher.store.tables.base import maybe_moment, moment
from watcher.store.tables.retention import pruned_in


def status_rows(
    db: Any,
    meta: Mapping[str, str],
    polls: Mapping[str, PollMark],
    facts: Sequence[Sequence[Any]],
    *,
    database_bytes: int | None,
    report_runs: Mapping[str, datetime],
    lease: LeaseRow | None = None,
) -> StatusRows:
    """`status`'s rows from what the backend read (`facts`: per watched session its id,
    status, gone, changed_at and notified_at), with the outbox read here on `db`.
    """
    return StatusRows(
        meta=meta,
        states={sid: (status, bool(gone)) for sid, status, gone, _, _ in facts},
        since={sid: moment(at) for sid, _, _, at, _ in facts if at is not None},
        polls=polls,
        notified={sid: moment(at) for sid, _, _, _, at in facts if at is not None},
        targets=read_targets(db),
        dead_letters=read_dead_letters(db),
        database_bytes=database_bytes,
        rows_pruned=pruned_in(meta),
        lease=lease,
        report_runs=report_runs,
    )


def read_targets(db: Any) -> tuple[TargetBacklog, ...]:
    """Each target's backlog: pending, retrying, next attempt, dead letters, last error."""
    # Pending and dead rows only, each through its partial index (never delivered ones).
    counts: dict[str, dict[str, Any]] = {}

    def backlog(target: str) -> dict[str, Any]:
        return counts.setdefault(target, {"pending": 0, "retrying": 0, "next": None, "dead": 0})

    for target, retrying, count, next_at in db.execute(
        "SELECT target, attempts > 0, COUNT(*), MIN(next_attempt_at) FROM outbox"
        " WHERE status = 'pending' GROUP BY target, attempts > 0"
    ).fetchall():
        backlog(target)["pending"] += count
        if retrying:
            backlog(target)["retrying"] += count
            backlog(target)["next"] = next_at
    for target, count in db.execute(
        "SELECT target, COUNT(*) FROM outbox WHERE status = 'dead' GROUP BY target"
    ).fetchall():
        backlog(target)["dead"] += count
    last_errors = dict(
        db.execute(
            "SELECT target, last_error FROM outbox o WHERE status = 'dead' AND id ="
            " (SELECT MAX(id) FROM outbox WHERE target = o.target AND status = 'dead')"
        ).fetchall()
    )
    return tuple(
        TargetBacklog(
            target=target,
            pending=entry["pending"],
            retrying=entry["retrying"],
            next_attempt=maybe_moment(entry["next"]),
            dead=entry["dead"],
            last_error=last_errors.get(target),
        )
        for target, entry in sorted(counts.items())
    )


def read_dead_letters(db: Any) -> tuple[DeadLetterRow, ...]:
    """The dead letters, oldest first."""
    rows = db.execute(
        "SELECT o.id, o.target, o.rule, e.type, e.session_id, o.attempts, o.created_at,"
        " o.finished_at, o.last_error FROM outbox o JOIN events e ON e.id = o.event_id"
        # The ids through the dead letters' partial index: never a scan of the outbox.
        " WHERE o.id IN (SELECT id FROM outbox WHERE status = 'dead') ORDER BY o.id"
    ).fetchall()
    return tuple(
        DeadLetterRow(
            id=r[0],
            target=r[1],
            rule=r[2],
            event_type=r[3],
            session_id=r[4],
            attempts=r[5],
            created_at=moment(r[6]),
            failed_at=maybe_moment(r[7]),
            last_error=r[8],
        )
        for r in rows
    )
