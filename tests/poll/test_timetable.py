"""The timetable of session polls: one heap, fired by one task."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from tests.clock import ManualClock
from watcher.core.schedule import PollTiming
from watcher.poll.timetable import Timetable


def fired_over(table: Timetable, clock: ManualClock, seconds: float, step: float) -> list[str]:
    """Step the clock through `seconds`, collecting what falls due (as `run()` would)."""
    fired: list[str] = []
    end = clock.now + seconds
    while clock.now < end:
        clock.advance(step)
        fired.extend(table.pop_due(clock.now))
    return fired


def test_first_run_at_its_phase_then_every_period() -> None:
    """The first run comes after `first_delay`, later ones one period apart (no jitter)."""
    clock = ManualClock(0.0)
    table = Timetable(lambda key: None, clock=clock, jitter=lambda: 0.0)
    table.set("a", PollTiming(period=10.0, jitter=0.0, first_delay=3.0), first=True)
    assert table.next_due() == 3.0
    assert table.pop_due(2.9) == []
    assert table.pop_due(3.0) == ["a"]
    assert table.next_due() == 13.0
    assert table.pop_due(13.0) == ["a"]


def test_jitter_is_added_per_run_and_never_accumulates() -> None:
    """Each run lands at base + jitter x draw; the base advances by whole periods."""
    clock = ManualClock(0.0)
    draws = iter([0.5, 0.9, 0.1])
    table = Timetable(lambda key: None, clock=clock, jitter=lambda: next(draws))
    table.set("a", PollTiming(period=10.0, jitter=2.0, first_delay=0.0), first=False)
    assert table.next_due() == 11.0  # base 10 + 0.5 x 2
    assert table.pop_due(11.0) == ["a"]
    assert table.next_due() == 21.8  # base 20 + 0.9 x 2
    assert table.pop_due(21.8) == ["a"]
    assert table.next_due() == pytest.approx(30.2)  # base 30, not 31.8 + 10


@pytest.mark.parametrize("change", ["reschedule", "remove"])
def test_a_replaced_or_removed_schedule_never_fires_again(change: str) -> None:
    """Setting a key again replaces its schedule; removing it stops it."""
    clock = ManualClock(0.0)
    table = Timetable(lambda key: None, clock=clock, jitter=lambda: 0.0)
    table.set("a", PollTiming(period=1.0, jitter=0.0, first_delay=0.5), first=True)
    table.set("b", PollTiming(period=1.0, jitter=0.0, first_delay=0.5), first=True)
    if change == "reschedule":
        slower = PollTiming(period=5.0, jitter=0.0, first_delay=0.0)
        table.set("a", slower, first=False)
        assert table.timing("a") == slower
        expected = ["b"] * 10 + ["a", "a"]
    else:
        table.remove("a")
        expected = ["b"] * 10
        assert "a" not in table
        assert table.timing("a") is None
    assert sorted(fired_over(table, clock, 10.0, 0.25)) == sorted(expected)


def test_missed_periods_fire_once_and_keep_the_grid() -> None:
    """After a stall of several periods a key fires once, then back on its grid."""
    clock = ManualClock(0.0)
    table = Timetable(lambda key: None, clock=clock, jitter=lambda: 0.0)
    table.set("a", PollTiming(period=1.0, jitter=0.0, first_delay=0.0), first=False)
    assert table.pop_due(5.5) == ["a"]  # slots 1..5 missed: one run
    assert table.next_due() == 6.0
    assert table.pop_due(5.9) == []


def test_many_keys_fire_in_due_order() -> None:
    """Keys come out earliest first, each exactly as often as its period says."""
    clock = ManualClock(0.0)
    table = Timetable(lambda key: None, clock=clock, jitter=lambda: 0.0)
    for i, period in enumerate((1.0, 2.0, 4.0)):
        table.set(f"k{i}", PollTiming(period=period, jitter=0.0, first_delay=0.0), first=False)
    fired = fired_over(table, clock, 8.0, 0.5)
    assert (fired.count("k0"), fired.count("k1"), fired.count("k2")) == (8, 4, 2)
    assert len(table) == 3


@pytest.mark.anyio
async def test_run_fires_keys_set_while_it_sleeps_and_stops() -> None:
    """`run()` wakes for a key set after it went to sleep, and returns on `stop()`."""
    fired: list[str] = []
    done = anyio.Event()

    def fire(key: str) -> None:
        fired.append(key)
        if len(fired) == 3:
            done.set()

    table = Timetable(fire)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(table.run)
            await anyio.lowlevel.checkpoint()  # run() is now asleep on an empty table
            table.set("a", PollTiming(period=0.01, jitter=0.0, first_delay=0.0), first=True)
            await done.wait()
            table.stop()
    assert fired[:3] == ["a", "a", "a"]


@pytest.mark.anyio
async def test_a_key_whose_firing_raises_never_stops_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`fire` raising for one key is logged; `run()` goes on to fire the next."""
    fired: list[str] = []
    clock = ManualClock(0.0)

    def fire(key: str) -> None:
        if key == "bad":
            raise RuntimeError("a bug")
        fired.append(key)
        table.stop()

    table = Timetable(fire, clock=clock, jitter=lambda: 0.0)
    every_second = PollTiming(period=1.0, jitter=0.0, first_delay=0.0)
    table.set("bad", every_second, first=True)
    table.set("good", every_second, first=True)
    with anyio.fail_after(10):
        await table.run()
    assert fired == ["good"]
    assert [r.getMessage() for r in caplog.records] == ["firing bad raised"]
