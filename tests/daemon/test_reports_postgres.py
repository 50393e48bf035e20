"""The report part on a PostgreSQL state: polled history in, one report out, once per time.

As tests/daemon/test_report_delivery.py, with the watcher's state in PostgreSQL
and the run made by the daemon's report part (`ReportPart.turn`): the history
is read from the database, the run recorded there with its outbox row, the
signed webhook's body checked against the published schema, and a restarted
watcher on the same database finds the run and queues nothing again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.daemon.parts import StepClock, clocked_rig
from tests.daemon.test_report_delivery import START, _day, _settings
from tests.rig import Rig
from watcher.core.secret import Secret
from watcher.core.settings import ReportSpec
from watcher.daemon import Watcher
from watcher.store import OutboxStatus
from watcher.store.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
TENS = ReportSpec("tens", "*/10 * * * *", notify=("ci",))


@pytest.fixture
def clock() -> StepClock:
    """The clock the simulator and the watcher share, at 08:00 UTC."""
    return StepClock(START)


@pytest.fixture
def rig(tmp_path: Path, clock: StepClock) -> Iterator[Rig]:
    """The loopback rig whose simulator reads the test's clock."""
    with clocked_rig(tmp_path, clock) as running:
        yield running


async def test_the_report_part_on_postgresql_sends_each_scheduled_time_once(
    rig: Rig, clock: StepClock, pg_url: str
) -> None:
    """08:20's report is built from the database, sent once, and not queued again on restart."""
    settings = replace(_settings(rig, TENS), state_url=Secret(pg_url))
    first = Watcher(settings, clock=clock.utc)
    try:
        assert isinstance(first.store, PostgresStore)
        await _day(rig, first, clock)  # ends at 08:21
        await first.reports.turn()
        await first.deliver_due()
    finally:
        await first.aclose()
        first.store.close()
    scheduled = datetime(2026, 12, 1, 8, 20, tzinfo=UTC)
    [body] = [r.json for r in rig.receiver.requests]
    assert (body["type"], body["session"]) == ("report", None)
    assert body["id"] == f"report:tens:{scheduled.isoformat()}"
    assert body["data"]["counts"]["finished"] == 1
    assert [s["id"] for s in body["data"]["sessions"]["interrupted"]] == ["s2"]
    assert rig.bodies.checked == 1  # and valid against the schema

    second = Watcher(settings, clock=clock.utc)  # a restart within the same ten minutes
    try:
        assert second.store.report_runs() == {"tens": scheduled}
        await second.reports.turn()
        await second.deliver_due()
        counts = second.store.counts()
    finally:
        await second.aclose()
        second.store.close()
    assert (counts[OutboxStatus.PENDING], counts[OutboxStatus.DELIVERED]) == (0, 1)
    assert len(rig.receiver.requests) == 1
    assert not settings.state_path.exists()
