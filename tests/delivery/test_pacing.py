"""Pacing: concurrent senders queue behind each other's slots; targets pace by their key."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest

from tests.clock import ManualClock
from watcher.core.secret import Secret
from watcher.core.settings import SlackTarget, WebhookTarget
from watcher.delivery import Pacer


class RecordedSleep:
    """Notes each wait a pacer asks for and yields once; moves `clock` by it, if given."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        await anyio.lowlevel.checkpoint()


def stepped_pacer() -> tuple[Pacer, ManualClock, RecordedSleep]:
    """A pacer whose sleeps move its clock at once."""
    clock = ManualClock(100.0)
    sleep = RecordedSleep(clock)
    return Pacer(clock=clock, sleep=sleep), clock, sleep


@pytest.mark.anyio
async def test_concurrent_senders_of_one_key_queue_behind_each_others_slots() -> None:
    """Three sends that start together get slots one, two and three gaps away."""
    clock, sleep = ManualClock(100.0), RecordedSleep()
    pacer = Pacer(clock=clock, sleep=sleep)

    async def send() -> None:
        async with pacer.turn("k", 0.5):
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(send)
    assert sleep.waits == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]


@pytest.mark.anyio
async def test_a_late_send_waits_only_for_what_is_left_of_its_gap() -> None:
    """A send that comes when the gap has partly passed waits the rest; none after it passed."""
    pacer, clock, sleep = stepped_pacer()
    async with pacer.turn("k", 1.0):
        pass  # the fresh process's first wait
    clock.advance(0.25)
    async with pacer.turn("k", 1.0):
        pass
    clock.advance(5.0)
    async with pacer.turn("k", 1.0):
        pass
    assert sleep.waits == [pytest.approx(1.0), pytest.approx(0.75)]


@pytest.mark.anyio
async def test_targets_on_one_slack_channel_share_their_turns() -> None:
    """`pace(target)` spaces two Slack targets of one channel; a webhook keeps its own turns."""
    pacer, _, sleep = stepped_pacer()
    gap = timedelta(seconds=2)
    first = SlackTarget(name="a", token=Secret("x"), channel="C1", min_interval=gap)
    second = replace(first, name="b")
    hook = WebhookTarget(
        name="hook", url="https://example.invalid/hook", min_interval=timedelta(seconds=3)
    )
    async with pacer.pace(first):
        pass
    async with pacer.pace(second):
        pass
    async with pacer.pace(hook):
        pass
    assert sleep.waits == [pytest.approx(2.0), pytest.approx(2.0), pytest.approx(3.0)]
