"""Named crash points for the crash harness (`bench/crash.py`); inert unless asked for.

`FACTORY_WATCHER_FAILPOINTS="after_outbox_commit:0.2,after_send:0.5"` makes the
process SIGKILL itself at those points with the given probability. The
harness uses it to kill the daemon at the worst moments: right after a poll's
outbox rows commit, after a destination accepted a message but before it was
marked delivered, and in the middle of a reload.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Mapping
from enum import StrEnum

ENV_VAR = "FACTORY_WATCHER_FAILPOINTS"


class Failpoint(StrEnum):
    """The named points."""

    AFTER_OUTBOX_COMMIT = "after_outbox_commit"
    AFTER_SEND = "after_send"
    # Slack accepted a new card; its ts is not stored yet (the restart must find it).
    AFTER_CARD_POST = "after_card_post"
    DURING_RELOAD = "during_reload"


def parse_failpoints(spec: str) -> dict[Failpoint, float]:
    """`"a:0.5,b"` -> {a: 0.5, b: 1.0}; unknown names raise ValueError."""
    points: dict[Failpoint, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, chance = item.partition(":")
        points[Failpoint(name)] = float(chance) if chance else 1.0
    return points


class Failpoints:
    """Decides, per call, whether to die at a point."""

    def __init__(self, points: Mapping[Failpoint, float], rng: random.Random) -> None:
        self._points = dict(points)
        self._rng = rng

    def hit(self, point: Failpoint) -> bool:
        """Whether the process should die at `point` now."""
        chance = self._points.get(point)
        return chance is not None and self._rng.random() < chance


_ACTIVE = Failpoints(parse_failpoints(os.environ.get(ENV_VAR, "")), random.Random())


def failpoint(point: Failpoint) -> None:
    """SIGKILL this process at `point` if the environment asked for it."""
    if _ACTIVE.hit(point):
        os.kill(os.getpid(), signal.SIGKILL)
