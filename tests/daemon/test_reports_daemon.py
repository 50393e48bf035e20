"""The report part with an injected clock, against a real SQLite store.

Each turn is driven by moving the clock: a report fires at its time, missed
times coalesce or are skipped past the grace, a reload adds, removes and
reschedules, one failing report leaves the others alone, and a second part
over the same state (a restart, a second daemon) never queues a time twice.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.core.reportsim import W0, History, at
from tests.daemon.offline import offline_settings, offline_watcher
from tests.daemon.parts import Clock, wiring
from tests.rig import run_driven, wait_for
from watcher.commands.report import report_command
from watcher.core.model import EventType
from watcher.core.report import Report, build_report
from watcher.core.secret import Secret
from watcher.core.settings import FactorySettings, ReportSpec, Settings
from watcher.daemon.reports import MAX_SLEEP, MIN_SLEEP, RETRY_AFTER, ReportPart
from watcher.ops.metrics import Metrics
from watcher.store import OutboxRow, SqliteStore

pytestmark = pytest.mark.anyio
M = timedelta(minutes=1)
H = timedelta(hours=1)
# Every ten minutes, and daily at 09:00 UTC (W0 is 2026-12-01 00:00 UTC).
TENS = ReportSpec(name="tens", schedule="*/10 * * * *", notify=("hook", "slack"))
DAILY = ReportSpec(name="daily", schedule="0 9 * * *", notify=("hook",))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A SQLite store in a file, with one session that finished a run in the morning."""
    opened = SqliteStore(tmp_path / "state.db")
    history = History(opened)
    history.poll(5, "a", "running", created=0)
    history.poll(8, "a", "idle", completed=7, message_count=2)
    yield opened
    opened.close()


class Part:
    """A report part over a store, with what it woke and counted."""

    def __init__(
        self,
        store: SqliteStore,
        clock: Clock,
        *reports: ReportSpec,
        build: Callable[..., Report] = build_report,
        sleep_bounds: tuple[float, float] = (MIN_SLEEP, MAX_SLEEP),
    ) -> None:
        self.woken: list[set[str]] = []
        settings = Settings(
            factory=FactorySettings(api_key=Secret("k")),
            state_path=Path(store.location),
            reports=reports,
        )
        self.metrics = Metrics()
        wired = wiring(
            settings,
            store,
            clock,
            wake=lambda targets: self.woken.append(set(targets)),
            metrics=self.metrics,
        )
        self.live = wired.live
        self.part = ReportPart(wired, build=build, sleep_bounds=sleep_bounds)

    async def turn(self) -> datetime | None:
        """One look at every report now."""
        return await self.part.turn()

    def reload(self, *reports: ReportSpec) -> None:
        """A reload to settings with `reports`."""
        self.live.settings = replace(self.live.settings, reports=reports)
        self.part.reschedule()

    def sent(self, report: str) -> float:
        """factory_watcher_reports_sent_total of `report`."""
        value = self.metrics.registry.get_sample_value(
            "factory_watcher_reports_sent_total", {"report": report}
        )
        return value or 0.0

    def skipped(self, report: str, reason: str) -> float:
        """factory_watcher_reports_skipped_total of `report` for `reason`."""
        value = self.metrics.registry.get_sample_value(
            "factory_watcher_reports_skipped_total", {"report": report, "reason": reason}
        )
        return value or 0.0


def queued(store: SqliteStore) -> list[tuple[str, str]]:
    """(event id, target) of every outbox row of a report, oldest first."""
    rows = [r for r in store.list_outbox() if isinstance(r, OutboxRow)]
    return [
        (r.event.id, r.target)
        for r in sorted(rows, key=lambda r: r.id)
        if r.event.type is EventType.REPORT
    ]


def rid(name: str, when: datetime) -> str:
    """The event id of report `name`'s run for `when`."""
    return f"report:{name}:{when.isoformat()}"


async def test_a_report_fires_at_its_time_once(store: SqliteStore) -> None:
    """Before its time it waits until then; at its time it queues one row per target, once."""
    clock = Clock(at(59) + timedelta(seconds=59))
    part = Part(store, clock, TENS)
    await part.turn()  # 00:50 was within the grace of a report that never ran
    assert queued(store) == [(rid("tens", at(50)), "hook"), (rid("tens", at(50)), "slack")]
    assert await part.turn() == at(60)
    clock.now = at(60)
    assert await part.turn() == at(70)
    assert queued(store)[2:] == [(rid("tens", at(60)), "hook"), (rid("tens", at(60)), "slack")]
    assert store.report_runs() == {"tens": at(60)}
    assert part.woken == [{"hook", "slack"}, {"hook", "slack"}]
    assert part.sent("tens") == 2
    clock.now = at(65)
    await part.turn()
    assert len(queued(store)) == 4


async def test_the_report_carries_the_window_content(store: SqliteStore) -> None:
    """The queued event is the report of its window, its rows' rule `report:NAME`."""
    clock = Clock(at(60))
    part = Part(store, clock, replace(TENS, window=H))
    await part.turn()
    (row, *_) = [r for r in store.list_outbox() if isinstance(r, OutboxRow)]
    document = row.event.data
    assert row.rule == f"report:{TENS.name}"
    assert row.event.occurred_at == at(60)
    assert document["empty"] is False
    assert "a" in str(document)  # the session that finished in the window is named


async def test_missed_times_coalesce_into_one_run(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Down from 01:00 to 01:35: one run, for 01:30, with 01:10 and 01:20 folded in."""
    clock = Clock(at(60))
    part = Part(store, clock, TENS)
    await part.turn()
    clock.now = at(95)
    with caplog.at_level(logging.INFO, logger="watcher.daemon"):
        assert await part.turn() == at(100)
    assert [e for e, t in queued(store) if t == "hook"] == [
        rid("tens", at(60)),
        rid("tens", at(90)),
    ]
    assert "2 earlier missed time(s) folded into this run" in caplog.text
    assert part.sent("tens") == 2


async def test_a_time_past_its_grace_is_skipped_with_a_log_line(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Down over 09:00 until 10:30 (1h grace): skipped once, logged, counted; the next runs."""
    clock = Clock(W0 + 9 * H)
    part = Part(store, clock, DAILY)
    assert await part.turn() == W0 + 33 * H
    clock.now = W0 + 34 * H + 30 * M
    with caplog.at_level(logging.INFO, logger="watcher.daemon"):
        assert await part.turn() == W0 + 57 * H
        await part.turn()
    skips = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert skips == [
        "report daily: skipped: 1 scheduled time missed, the latest"
        " (2026-12-02T09:00:00+00:00) 90m late: past misfire_grace (1h)"
    ]
    assert part.skipped("daily", "too_old") == 1
    assert queued(store) == [(rid("daily", W0 + 9 * H), "hook")]
    clock.now = W0 + 57 * H
    await part.turn()
    assert queued(store)[-1] == (rid("daily", W0 + 57 * H), "hook")
    assert store.report_runs() == {"daily": W0 + 57 * H}


async def test_a_restart_within_the_grace_sends_the_missed_time_once(
    tmp_path: Path, store: SqliteStore
) -> None:
    """Down over 09:00, back at 09:40: a new part sends 09:00 at once, and only once."""
    clock = Clock(W0 + 8 * H)
    await Part(store, clock, DAILY).turn()
    clock.now = W0 + 9 * H + 40 * M
    again = Part(store, clock, DAILY)
    await again.turn()
    await again.turn()
    assert queued(store) == [(rid("daily", W0 + 9 * H), "hook")]


async def test_a_second_part_over_the_same_store_at_the_same_time_records_nothing(
    store: SqliteStore,
) -> None:
    """Exactly once across a restart (or two daemons): the second finds the run and waits."""
    clock = Clock(at(60))
    first = Part(store, clock, TENS)
    await first.turn()
    reopened = SqliteStore(store.location)
    try:
        second = Part(reopened, clock, TENS)
        assert await second.turn() == at(70)
        assert second.woken == []
        assert second.sent("tens") == 0
    finally:
        reopened.close()
    assert [e for e, t in queued(store) if t == "hook"] == [rid("tens", at(60))]


async def test_a_run_another_part_recorded_meanwhile_is_not_queued_again(
    store: SqliteStore,
) -> None:
    """Both decided to run 01:00; the one that records second queues nothing."""
    clock = Clock(at(60))
    first, second = Part(store, clock, TENS), Part(store, clock, TENS)
    runs = store.report_runs()
    await first.turn()
    store_runs = store.report_runs
    store.report_runs = lambda: runs  # type: ignore[method-assign]  # read before first recorded
    try:
        await second.turn()
    finally:
        store.report_runs = store_runs  # type: ignore[method-assign]
    assert [e for e, t in queued(store) if t == "hook"] == [rid("tens", at(60))]
    assert (first.sent("tens"), second.sent("tens")) == (1, 0)
    assert second.woken == []


async def test_skip_empty_records_the_run_without_sending_it(store: SqliteStore) -> None:
    """Nothing happened in the window: no row, the run recorded (not retried), counted."""
    quiet = replace(TENS, window=5 * M, skip_empty=True)
    clock = Clock(at(200))
    part = Part(store, clock, quiet)
    await part.turn()
    await part.turn()
    assert queued(store) == []
    assert store.report_runs() == {"tens": at(200)}
    assert part.skipped("tens", "empty") == 1
    assert part.sent("tens") == 0


async def test_an_empty_report_is_sent_when_not_skipped(store: SqliteStore) -> None:
    """Without skip_empty, nothing happened is a report too ("nothing happened")."""
    clock = Clock(at(200))
    part = Part(store, clock, replace(TENS, window=5 * M))
    await part.turn()
    [(event_id, _), _] = queued(store)
    (row,) = [r for r in store.list_outbox() if isinstance(r, OutboxRow) and r.target == "hook"]
    assert row.event.data["empty"] is True
    assert event_id == rid("tens", at(200))


async def test_one_failing_report_leaves_the_others_and_is_retried(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in one report's content: logged, the other sent, the failed one retried later."""
    bug = {"broken"}

    def broken(spec: ReportSpec, *args: Any) -> Report:
        if spec.name in bug:
            raise ValueError("a bug in this report")
        return build_report(spec, *args)

    clock = Clock(at(60))
    part = Part(store, clock, replace(TENS, name="broken"), TENS, build=broken)
    with caplog.at_level(logging.INFO, logger="watcher.daemon"):
        assert await part.turn() == at(60) + RETRY_AFTER
    assert "report broken failed, trying again at 2026-12-01T01:00:30+00:00" in caplog.text
    assert {e for e, _ in queued(store)} == {rid("tens", at(60))}
    clock.now = at(60) + RETRY_AFTER / 2
    await part.turn()  # not yet: the failed report waits its retry
    bug.clear()  # the bug is fixed
    clock.now = at(60) + RETRY_AFTER
    assert await part.turn() == at(70)
    assert {e for e, _ in queued(store)} == {rid("tens", at(60)), rid("broken", at(60))}


class UnreadableRuns(SqliteStore):
    """A SQLite store whose report runs cannot be read (a disk gone), counting the tries."""

    failures = 0

    def report_runs(self) -> dict[str, datetime]:
        """Fail, and count it."""
        self.failures += 1
        raise OSError("disk gone")


async def test_a_store_that_fails_is_retried_and_does_not_end_the_loop(tmp_path: Path) -> None:
    """The runs cannot be read: the loop logs, sleeps, and goes on until stopped."""
    store = UnreadableRuns(tmp_path / "unreadable.db")
    clock = Clock(at(60))
    part = Part(store, clock, TENS, sleep_bounds=(0.0, 0.0))
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(part.part.run)
                await anyio.to_thread.run_sync(lambda: wait_for(lambda: store.failures >= 3))
                part.live.stop()
        assert queued(store) == []
    finally:
        store.close()


async def test_a_reload_adds_removes_and_reschedules_reports(store: SqliteStore) -> None:
    """Added: from its next time (no catch-up); removed: no more runs; rescheduled: new times."""
    clock = Clock(at(60))
    part = Part(store, clock, TENS, DAILY)
    await part.turn()
    clock.now = at(65)
    hourly = ReportSpec(name="hourly", schedule="5 * * * *", notify=("hook",))
    part.reload(replace(TENS, schedule="*/15 * * * *"), hourly)  # daily removed
    assert await part.turn() == at(75)  # 01:05 was before the reload: not caught up
    clock.now = at(70)
    await part.turn()  # 01:10 is no longer a time of `tens`
    clock.now = at(75)
    await part.turn()
    clock.now = W0 + 9 * H
    await part.turn()  # daily is gone; tens runs for 09:00, hourly for 08:05
    hook = [e for e, t in queued(store) if t == "hook"]
    assert hook == [
        rid("tens", at(60)),
        rid("tens", at(75)),
        rid("tens", W0 + 9 * H),
        rid("hourly", W0 + 8 * H + 5 * M),
    ]
    assert "daily" not in store.report_runs()


async def test_a_reload_that_keeps_a_schedule_keeps_its_catch_up(store: SqliteStore) -> None:
    """A reload that changes only a report's targets does not move its schedule."""
    clock = Clock(at(60))
    part = Part(store, clock, TENS)
    await part.turn()
    clock.now = at(75)
    part.reload(replace(TENS, notify=("hook",)))
    await part.turn()
    assert queued(store)[-1] == (rid("tens", at(70)), "hook")


async def test_the_watcher_runs_the_part_and_a_reload_wakes_it(tmp_path: Path) -> None:
    """Composed by the root: the loop sleeps to the next time, and a reload wakes it early."""
    now = [W0 + 8 * H]
    settings = replace(offline_settings(tmp_path), reports=(DAILY,))
    watcher = offline_watcher(settings, now)
    asleep = anyio.Event()
    weekly = ReportSpec(name="weekly", schedule="0 9 * * tue", notify=("hook",))
    sleep = watcher.reports._sleep

    async def noted_sleep(seconds: float) -> None:
        asleep.set()  # no checkpoint before the sleep below parks the loop
        await sleep(seconds)

    watcher.reports._sleep = noted_sleep  # type: ignore[method-assign]

    async def drive() -> None:
        await asleep.wait()  # the loop now sleeps towards 09:00, a minute at most
        now[0] = W0 + 9 * H + 5 * M
        watcher.apply_settings(replace(settings, reports=(DAILY, weekly)))
        await anyio.to_thread.run_sync(
            lambda: wait_for(lambda: "daily" in watcher.store.report_runs(), what="the run")
        )
        watcher.request_stop()

    try:
        await run_driven(watcher, drive, within=20)
        # weekly was added at 09:05: its 09:00 was before it existed, and is not caught up
        assert queued(watcher.store) == [(rid("daily", W0 + 9 * H), "hook")]
    finally:
        watcher.store.close()


@pytest.mark.parametrize("spec", [replace(TENS, window=H), TENS], ids=["window", "since_last"])
async def test_report_command_prints_what_the_scheduled_run_queued(
    store: SqliteStore, spec: ReportSpec
) -> None:
    """`report NAME --json` made at the scheduled time prints the very document the run sent."""
    clock = Clock(at(60))
    part = Part(store, clock, spec)
    await part.turn()
    (row, *_) = [r for r in store.list_outbox() if isinstance(r, OutboxRow)]
    settings = replace(part.live.settings, state_path=Path(store.location))
    args = argparse.Namespace(name=spec.name, window=None, json=True, db=None)
    out, err = io.StringIO(), io.StringIO()
    assert report_command(settings, args, out, err, now=at(60)) == 0, err.getvalue()
    assert json.loads(out.getvalue()) == row.event.data
