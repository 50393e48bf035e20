"""Crash points for the crash harness."""

from __future__ import annotations

import random

import pytest

from watcher.ops.failpoint import Failpoint, Failpoints, parse_failpoints


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("after_send", {Failpoint.AFTER_SEND: 1.0}),
        (
            " after_outbox_commit:0.25 , during_reload:0 ",
            {Failpoint.AFTER_OUTBOX_COMMIT: 0.25, Failpoint.DURING_RELOAD: 0.0},
        ),
    ],
)
def test_parse(spec: str, expected: dict[Failpoint, float]) -> None:
    """The spec names points and optional probabilities."""
    assert parse_failpoints(spec) == expected


def test_unknown_point_is_refused() -> None:
    """A typo in the spec is an error, not a silently inert harness."""
    with pytest.raises(ValueError, match="after_sned"):
        parse_failpoints("after_sned")


def test_hit_follows_probability() -> None:
    """Points fire with their probability; unnamed points never fire."""
    points = Failpoints({Failpoint.AFTER_SEND: 0.5, Failpoint.DURING_RELOAD: 1.0}, random.Random(1))
    hits = sum(points.hit(Failpoint.AFTER_SEND) for _ in range(1000))
    assert 400 < hits < 600
    assert points.hit(Failpoint.DURING_RELOAD)
    assert not points.hit(Failpoint.AFTER_OUTBOX_COMMIT)
