"""Faults a review found (issue 16), each through the real daemon path on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.rig import Rig, running_rig
from watcher.daemon import Watcher


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


@pytest.mark.anyio
async def test_a_full_disk_under_the_recording_costs_a_warning_and_a_count_not_a_poll(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording to /dev/full: polls go on, one warning, no traceback, each poll counted."""
    settings = replace(rig.with_sessions("s1"), record_path=Path("/dev/full"))
    watcher = Watcher(settings)
    try:
        for _ in range(3):
            reports = await watcher.poll_all()
            assert [r.failure for r in reports] == [None]
    finally:
        await watcher.aclose()  # the writer finishes what was queued
        watcher.store.close()
    recorder = [r for r in caplog.records if r.name == "watcher.recorder"]
    assert [r.levelname for r in recorder] == ["WARNING"]
    assert "No space left on device" in recorder[0].getMessage()
    assert [r for r in caplog.records if r.exc_info] == []
    exposition = watcher.metrics.exposition(None)[0].decode()
    assert 'factory_watcher_record_failures_total{reason="ENOSPC"} 3.0' in exposition
