"""Metrics: a registry per watcher, figures that move with the daemon, readiness in process."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.clock import ManualClock
from tests.rig import Rig, running_rig
from watcher.core.settings import HttpSettings, Settings
from watcher.daemon import Watcher
from watcher.ops.metrics import Metrics, StoreFigures
from watcher.store import PollMark, SqliteStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def samples(metrics: Metrics) -> Samples:
    """Every sample the registry exposes, parsed back with prometheus-client's parser."""
    body, _ = metrics.exposition(None)
    found: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float | None:
    """One sample's value, or None if the series is absent."""
    return found.get((name, frozenset(labels.items())))


def test_each_watcher_has_its_own_registry() -> None:
    """Two Metrics count apart and both register the same names without clashing."""
    first, second = Metrics(), Metrics()
    first.polls.labels("ok").inc(3)
    assert value(samples(first), "factory_watcher_polls_total", outcome="ok") == 3
    assert value(samples(second), "factory_watcher_polls_total", outcome="ok") is None
    assert not any(name.endswith("_created") for name, _ in samples(first))


def test_store_figures_render_at_scrape_time() -> None:
    """Outbox and session gauges come from the last store read; the age from the clock."""
    clock = ManualClock(1000.0)
    metrics = Metrics(clock=clock)
    metrics.set_store_figures(
        StoreFigures(
            sessions={"running": 2, "gone": 1},
            pending={"ci": 3, "ops": 0},
            dead={"ci": 1, "ops": 0},
            oldest_pending_at=990.0,
        )
    )
    clock.advance(5)
    found = samples(metrics)
    assert value(found, "factory_watcher_sessions", status="running") == 2
    assert value(found, "factory_watcher_sessions", status="gone") == 1
    assert value(found, "factory_watcher_outbox_pending", target="ci") == 3
    assert value(found, "factory_watcher_outbox_dead", target="ci") == 1
    assert value(found, "factory_watcher_outbox_oldest_pending_seconds") == 15


def test_openmetrics_when_asked() -> None:
    """A scraper asking for OpenMetrics gets it (prometheus-client's negotiation)."""
    body, content_type = Metrics().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def fake_proc(root: Path, *, with_stat: bool) -> Path:
    """A /proc tree with this process as `self`; `/proc/stat` only when `with_stat`."""
    own = root / "self"
    (own / "fd").mkdir(parents=True)
    for fd in range(3):
        (own / "fd" / str(fd)).touch()
    fields = ["S", *[str(n) for n in range(1, 19)], "500", "123456", "100"]
    (own / "stat").write_text("42 (python) " + " ".join(fields))
    (own / "limits").write_text("Max open files            1024                 4096    files\n")
    if with_stat:
        (root / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    return root


@pytest.mark.parametrize("with_stat", [True, False], ids=["plain", "ProcSubset=pid"])
def test_process_figures_with_and_without_proc_stat(tmp_path: Path, with_stat: bool) -> None:
    """Process figures are there even where systemd hides /proc/stat (the boot time)."""
    metrics = Metrics(proc=str(fake_proc(tmp_path, with_stat=with_stat)))
    found = samples(metrics)
    assert value(found, "process_open_fds") == 3
    assert value(found, "process_max_fds") == 1024
    start = value(found, "process_start_time_seconds")
    assert start is not None
    if with_stat:
        assert start == 1700000000 + 500 / 100
    else:
        assert start > 1_000_000_000


class RefusingStore(SqliteStore):
    """A store whose disk refuses writes, as a read-only or full file system would."""

    def record_housekeeping(
        self,
        polls: Sequence[PollMark],
        meta: Mapping[str, str],
        watched: Collection[str] | None = None,
    ) -> None:
        """Fail the way SQLite does on a read-only database."""
        raise sqlite3.OperationalError("attempt to write a readonly database")


@pytest.mark.anyio
async def test_counters_gauges_and_readiness_follow_the_watcher(rig: Rig, tmp_path: Path) -> None:
    """Polls, events, sends and store figures show up; readiness follows polls and the store."""
    settings = rig.with_sessions("s1", "s2")
    now = [datetime.now(UTC)]
    watcher = Watcher(settings, clock=lambda: now[0])
    try:
        assert watcher.readiness().reason == "not started"
        watcher.supervisor.mark_started()  # run() does once READY=1 is sent
        assert watcher.readiness().reason == "store not checked yet"
        await watcher.poll_all()
        rig.sim.complete_run("s1")
        rig.sim.delete("s2")
        await watcher.poll_all()
        await watcher.deliver_due()
        await watcher.housekeeping()
        assert watcher.readiness().ready
        found = samples(watcher.metrics)
        assert value(found, "factory_watcher_polls_total", outcome="ok") == 3
        assert value(found, "factory_watcher_polls_total", outcome="not_found") == 1
        assert value(found, "factory_watcher_events_total", type="session.discovered") == 2
        assert value(found, "factory_watcher_events_total", type="session.deleted") == 1
        assert value(found, "factory_watcher_events_total", type="session.completed") == 1
        assert value(found, "factory_watcher_notifications_total", target="ci", outcome="sent") == 2
        assert value(found, "factory_watcher_sessions", status="idle") == 1
        assert value(found, "factory_watcher_sessions", status="gone") == 1
        assert value(found, "factory_watcher_outbox_pending", target="ci") == 0

        now[0] += 2 * settings.poll.interval + timedelta(seconds=1)
        await watcher.housekeeping()
        answer = watcher.readiness()
        assert not answer.ready
        assert answer.reason.startswith("API down: no successful poll for")

        await watcher.poll_all()
        refusing = watcher.supervisor.store = RefusingStore(settings.state_path)
        try:
            await watcher.housekeeping()
        finally:
            refusing.close()
        answer = watcher.readiness()
        assert answer.reason == "store not writable: attempt to write a readonly database"
    finally:
        await watcher.aclose()
        watcher.store.close()


@pytest.mark.anyio
async def test_reloads_are_counted_and_restart_only_keys_named(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A good reload sets success and time; a bad one clears success and keeps the time."""
    settings = rig.with_sessions("s1")
    answers: list[Settings | Exception] = [
        replace(settings, http=HttpSettings("127.0.0.1", 9464)),
        ValueError("config.yaml:3: poll.interval: expected a duration"),
    ]

    def reload() -> Settings:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watcher = Watcher(settings, reload=reload)
    seen: list[Samples] = []

    async def drive() -> None:
        assert await watcher.reload()
        seen.append(samples(watcher.metrics))
        assert not await watcher.reload()
        seen.append(samples(watcher.metrics))
        watcher.request_stop()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await watcher.run(handle_signals=False, on_ready=lambda: tg.start_soon(drive))
    good, bad = seen
    assert "http changed: that takes effect on the next restart" in caplog.text
    assert value(good, "factory_watcher_config_last_reload_success") == 1
    assert value(bad, "factory_watcher_config_last_reload_success") == 0
    stamp = "factory_watcher_config_last_reload_timestamp_seconds"
    assert value(bad, stamp) == value(good, stamp)
