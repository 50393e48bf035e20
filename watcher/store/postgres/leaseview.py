"""The leader lease as `status` shows it: one read of `leader_lease` with the database's clock.

Read-only and role-independent: it names who holds the lease, its epoch and
when it lapses by the database's own clock (the clock the lease is kept on).
The lease's SQL for taking and renewing it lives with the replica, not here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg

from watcher.store.rows import LeaseRow

_LEASE = (
    "SELECT holder, epoch, acquired_at, renewed_at, expires_at, now() FROM leader_lease"
    " WHERE name = 'leader'"
)


def read_lease(db: psycopg.Connection[Any]) -> LeaseRow | None:
    """The lease row, if any replica ever took it (run inside the caller's read transaction)."""
    present = db.execute("SELECT to_regclass('leader_lease') IS NOT NULL").fetchone()
    if present is None or not present[0]:
        return None
    row = db.execute(_LEASE).fetchone()
    if row is None:
        return None
    holder, epoch, acquired, renewed, expires, now = row
    return LeaseRow(
        holder=str(holder),
        epoch=int(epoch),
        acquired_at=_utc(acquired),
        renewed_at=_utc(renewed),
        expires_at=_utc(expires),
        read_at=_utc(now),
    )


def _utc(value: datetime) -> datetime:
    """A TIMESTAMPTZ (in the session's time zone) as UTC."""
    return value.astimezone(UTC)
