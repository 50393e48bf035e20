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
    """200 with a readable session.

    `body` is the decoded JSON it was read from (for records); `digest`
    fingerprints the raw body, so an identical next answer can skip parsing.
    """

    snapshot: Snapshot
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    digest: bytes | None = None


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


@dataclass(frozen=True, slots=True)
class Unchanged:
    """200 whose body has the digest the caller already knew: nothing to parse or diff."""

    digest: bytes


FetchResult = Fetched | NotFound | FetchFailed
Answer = FetchResult | Unchanged  # what a source may answer when told the last known body
