"""What one poll of the Factory API can come back with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from watcher.core.model import Snapshot


class FetchFailureKind(StrEnum):
    """Failed polls: a rejected key needs a human, the rest pass by themselves."""

    AUTH = "auth"
    RETRYABLE = "retryable"


@dataclass(frozen=True, slots=True)
class Fetched:
    """200 with a readable session; `body` is the decoded JSON it was read from (for records)."""

    snapshot: Snapshot
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class NotFound:
    """404: the session was deleted (soft) or never existed."""


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """No usable answer; never a reason to derive a transition."""

    kind: FetchFailureKind
    reason: str
    retry_after: timedelta | None = None
    status: int | None = None


FetchResult = Fetched | NotFound | FetchFailed
