"""The watcher end to end on a PostgreSQL state: poll the simulator, record, deliver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from tests.daemon.parts import cycle
from tests.rig import CHANNEL, Rig, running_rig
from watcher.core.secret import Secret
from watcher.daemon import Watcher
from watcher.store import OutboxStatus
from watcher.store.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def webhooks(rig: Rig) -> list[tuple[str, str, int]]:
    """(type, session id, sequence) of every webhook the receiver accepted."""
    return [
        (r.json["type"], r.json["session"]["id"], r.json["sequence"])
        for r in rig.receiver.requests
        if r.status < 300
    ]


async def test_a_watcher_on_postgresql_records_and_delivers_each_transition_once(
    rig: Rig, pg_url: str, tmp_path: Path
) -> None:
    """Transitions polled from the simulator reach Slack and the webhook once, across a
    restart; the state is in the database (no SQLite file is made)."""
    settings = replace(rig.with_sessions("s1", "s2"), state_url=Secret(pg_url))
    first = Watcher(settings)
    try:
        assert isinstance(first.store, PostgresStore)
        await cycle(first)  # the baselines: no rule routes them
        rig.sim.complete_run("s1")
        await cycle(first)
        await cycle(first)  # nothing new: nothing sent again
    finally:
        await first.aclose()
        first.store.close()
    assert [m.channel for m in rig.slack.messages] == [CHANNEL]
    assert "stopped running" in rig.slack.messages[0].text
    assert webhooks(rig) == [("session.completed", "s1", 2)]
    assert all(r.signature_valid for r in rig.receiver.requests)

    rig.sim.archive("s1")
    second = Watcher(settings)  # a restart: the snapshots come from the database
    try:
        await cycle(second)
        await cycle(second)
        assert second.store.counts()[OutboxStatus.PENDING] == 0
    finally:
        await second.aclose()
        second.store.close()
    assert webhooks(rig) == [("session.completed", "s1", 2), ("session.archived", "s1", 3)]
    assert len(rig.slack.messages) == 1
    assert not settings.state_path.exists()
    with psycopg.connect(pg_url) as db:
        delivered = db.execute(
            "SELECT target, COUNT(*) FROM outbox WHERE status = 'delivered' GROUP BY target"
        ).fetchall()
    assert dict(delivered) == {"team-slack": 1, "ci": 2, "ops": 1}
