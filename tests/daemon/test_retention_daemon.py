"""Retention end to end: the real daemon's parts against the simulator on 127.0.0.1.

A discovered session ages out of discovery, is forgotten once the (shortened)
retention has passed (its delivered notifications with it), then comes back:
it is a new baseline, and its webhook `sequence` goes on increasing. The
watcher's clock is injected: the test moves it past the retention instead of
waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.rig import Rig, running_rig
from watcher.core.settings import DiscoverFilter, DiscoverSettings, Retention, Rule
from watcher.daemon import Watcher

pytestmark = pytest.mark.anyio
TOLD = Rule(name="told", on=("session.status_changed",), notify=("ci",))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


class Clock:
    """The watcher's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def told(rig: Rig, session_id: str) -> list[tuple[str, int]]:
    """(type, sequence) of the webhooks accepted about `session_id`, in order."""
    return [
        (r.json["type"], r.json["sequence"])
        for r in rig.receiver.requests
        if r.status < 300 and r.json["session"]["id"] == session_id
    ]


async def test_a_session_that_aged_out_is_forgotten_and_comes_back_as_a_new_baseline(
    rig: Rig,
) -> None:
    """Forgotten after forget_sessions_after; seen again, it is discovered anew, sequence on."""
    rig.sim.add_session("s", title="keep-s", status="idle")
    rig.sim.add_session("other", title="keep-other", status="idle")
    settings = replace(
        rig.settings,
        sessions=(),
        rules=(TOLD,),
        discover=DiscoverSettings(
            interval=timedelta(seconds=60), include=DiscoverFilter(titles=("keep-*",))
        ),
        retention=Retention(
            keep_delivered=timedelta(minutes=5), forget_sessions_after=timedelta(minutes=5)
        ),
    )
    clock = Clock()
    watcher = Watcher(settings, clock=clock)
    try:
        await watcher.discover_once()  # the first discovery: both are baselines
        rig.sim.update("s", status="running")
        await watcher.poll("s")
        await watcher.deliver_due()
        assert told(rig, "s") == [("session.status_changed", 1)]

        rig.sim.update("s", title="done-s")  # no longer matches: it ages out of discovery
        assert (await watcher.discover_once()).leaving == ("s",)
        await watcher.poll("s")  # its last poll, then it is dropped
        assert "s" not in watcher.book.watched
        await watcher.pruner.prune()
        left_at = watcher.store.unwatched_since("s")
        assert left_at is not None
        assert watcher.store.load_state("s") is not None  # not yet: retention is 5 minutes

        clock.offset = timedelta(minutes=6)
        report = await watcher.pruner.prune()
        assert (report.rows["sessions"], report.rows["outbox"]) == (1, 1)
        assert watcher.store.load_state("s") is None
        assert watcher.store.load_state("other") is not None  # still watched: kept
        assert watcher.store.discovered().session_ids == {"other"}
        scraped = watcher.metrics.registry.get_sample_value(
            "factory_watcher_rows_pruned_total", {"table": "sessions"}
        )
        assert scraped == 1
        assert (
            watcher.metrics.registry.get_sample_value("factory_watcher_database_bytes") or 0
        ) > 0

        rig.sim.update("s", title="keep-s again")  # listed again
        assert (await watcher.discover_once()).added == ("s",)
        baseline = await watcher.poll("s")
        assert [e.type for e in baseline.events] == ["session.discovered"]  # a new baseline
        rig.sim.update("s", status="idle")
        await watcher.poll("s")
        await watcher.deliver_due()
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert told(rig, "s") == [("session.status_changed", 1), ("session.status_changed", 2)]
