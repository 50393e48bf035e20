"""The states of an outbox row.

A value of its own, apart from `watcher.store`, so that the command line can
offer these states as choices without importing the store.
"""

from __future__ import annotations

from enum import StrEnum


class OutboxStatus(StrEnum):
    """Where a notification stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
