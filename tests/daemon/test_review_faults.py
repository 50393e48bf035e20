"""Faults a review found (issue 16), each through the real daemon path on loopback."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from tests.rig import Rig, running_rig
from watcher.core.settings import Rule, SlackTemplate, WebhookTarget, WebhookTemplate
from watcher.daemon import Watcher
from watcher.delivery.rendering import SendTimeRenderer
from watcher.store import OutboxStatus
from watcher.testing.sinks import ReceivedWebhook, WebhookReceiver


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


async def complete_s1(rig: Rig, watcher: Watcher) -> None:
    """Poll s1 (the baseline), complete its run, poll again: `session.completed` is queued."""
    await watcher.poll_all()
    rig.sim.complete_run("s1")
    await watcher.poll_all()


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


class LogSignal(logging.Handler):
    """Sets `seen` when a record `matches`: a log line to wait for, from any thread."""

    def __init__(self, matches: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.matches = matches
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Note a matching record."""
        if self.matches(record):
            self.seen.set()


@pytest.mark.anyio
async def test_a_busy_store_after_a_send_retries_the_mark_never_the_send(rig: Rig) -> None:
    """Another writer locks the store during the send: one send, delivered once unlocked."""
    settings = rig.with_sessions("s1")
    blocker = sqlite3.connect(settings.state_path, isolation_level=None, check_same_thread=False)

    def lock_the_store(_received: ReceivedWebhook) -> None:
        blocker.execute("BEGIN IMMEDIATE")  # before the answer: the mark meets the lock

    refused = LogSignal(lambda r: "trying the mark again" in r.getMessage())
    delivery_log = logging.getLogger("watcher.delivery")
    with WebhookReceiver(on_message=lock_the_store) as receiver:
        ci = WebhookTarget(name="ci", url=receiver.url + "/factory", allow_http=True)
        settings = replace(settings, targets={"ci": ci})
        watcher = Watcher(settings)
        delivery_log.addHandler(refused)
        try:
            await complete_s1(rig, watcher)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.deliver_due)
                assert await anyio.to_thread.run_sync(refused.seen.wait, 30)
                blocker.execute("ROLLBACK")
            rows = watcher.store.list_outbox()
        finally:
            delivery_log.removeHandler(refused)
            await watcher.aclose()
            watcher.store.close()
            blocker.close()
        assert [r.json["type"] for r in receiver.requests] == ["session.completed"]
    sent = [(r.status, r.attempts) for r in rows if r.target == "ci"]
    assert sent == [(OutboxStatus.DELIVERED, 1)]
    assert watcher.delivery.stats.mark_retries >= 1


@pytest.mark.anyio
async def test_stopping_while_a_mark_is_refused_leaves_the_row_to_be_sent_again(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled while retrying the mark: the row stays pending and is sent again later."""
    settings = rig.with_sessions("s1")
    blocker = sqlite3.connect(settings.state_path, isolation_level=None, check_same_thread=False)
    locked = threading.Event()

    def lock_the_store_once(_received: ReceivedWebhook) -> None:
        if not locked.is_set():
            locked.set()
            blocker.execute("BEGIN IMMEDIATE")

    refused = LogSignal(lambda r: "trying the mark again" in r.getMessage())
    delivery_log = logging.getLogger("watcher.delivery")
    with WebhookReceiver(on_message=lock_the_store_once) as receiver:
        ci = WebhookTarget(name="ci", url=receiver.url + "/factory", allow_http=True)
        settings = replace(settings, targets={"ci": ci})
        watcher = Watcher(settings)
        delivery_log.addHandler(refused)
        try:
            await complete_s1(rig, watcher)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.deliver_due)
                assert await anyio.to_thread.run_sync(refused.seen.wait, 30)
                tg.cancel_scope.cancel()  # what the drain deadline does at shutdown
            blocker.execute("ROLLBACK")
            pending = [r.status for r in watcher.store.list_outbox() if r.target == "ci"]
            await watcher.deliver_due()
        finally:
            delivery_log.removeHandler(refused)
            await watcher.aclose()
            watcher.store.close()
            blocker.close()
        assert [r.json["type"] for r in receiver.requests] == ["session.completed"] * 2
    assert pending == [OutboxStatus.PENDING]
    assert "it will be sent again after a restart" in caplog.text


NESTED_BODY = (
    '{"n": "{% for a in range(1000) %}{% for b in range(1000) %}1{% endfor %}{% endfor %}"}'
)
# Within the step budget, but each step joins ten thousand numbers: seconds of work.
SLOW_BODY = '{% set r = range(10000) %}{% for i in r %}{% set s = r|join(",") %}{% endfor %}{}'


class MonotonicSteps:
    """Monotonic seconds that move only when told; notes being read off the test's thread
    (the render's time limit, asked from the render thread)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.owner = threading.get_ident()
        self.read_elsewhere = threading.Event()

    def __call__(self) -> float:
        """The time now."""
        if threading.get_ident() != self.owner:
            self.read_elsewhere.set()
        return self.now


async def poll_while_rendering(
    watcher: Watcher, clock: MonotonicSteps, sent: Callable[[], int]
) -> tuple[int, int]:
    """Deliver in the background; once the render thread reads the clock, poll three times,
    then let the render's time run out: the polls and the `sent()` count meanwhile."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher.deliver_due)
        assert await anyio.to_thread.run_sync(clock.read_elsewhere.wait, 30)
        before = watcher.stats.polls
        for _ in range(3):
            await watcher.poll_all()
        polled, sent_meanwhile = watcher.stats.polls - before, sent()
        clock.now += 2.5  # the render's time is up: it stops at its next step
    return polled, sent_meanwhile


def with_body_template(rig: Rig, body: str) -> Watcher:
    """A watcher of s1 whose `completed` rule sends `body`'s template to ci."""
    settings = rig.with_sessions("s1")
    rule = Rule("completed", ("session.completed",), ("ci",), template=WebhookTemplate(body))
    return Watcher(replace(settings, rules=(rule,)))


@pytest.mark.anyio
async def test_a_template_with_loops_in_loops_falls_back_to_the_built_in_message(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """At send time, a template past its step budget costs a warning, not the notification."""
    watcher = with_body_template(rig, NESTED_BODY)
    try:
        await complete_s1(rig, watcher)
        await watcher.deliver_due()
    finally:
        await watcher.aclose()
        watcher.store.close()
    (sent,) = rig.receiver.requests
    assert sent.json["type"] == "session.completed"
    assert "template" not in sent.json  # the built-in body
    assert "the message is built-in instead" in caplog.text
    assert "more than 100,000 steps" in caplog.text


@pytest.mark.anyio
async def test_polls_go_on_while_a_slow_template_renders_and_its_time_limit_ends_it(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow template renders in a thread while polls go on; its time limit ends it."""
    clock = MonotonicSteps()
    settings = rig.with_sessions("s1")
    rule = Rule("completed", ("session.completed",), ("ci",), template=WebhookTemplate(SLOW_BODY))
    settings = replace(settings, rules=(rule,))
    renderer = SendTimeRenderer(lambda: settings, clock=clock, time_limit=2.0)
    watcher = Watcher(settings, render=renderer.message)
    try:
        await complete_s1(rig, watcher)
        polled_while_rendering, sent_while_rendering = await poll_while_rendering(
            watcher, clock, lambda: len(rig.receiver.requests)
        )
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert (polled_while_rendering, sent_while_rendering) == (3, 0)
    (sent,) = rig.receiver.requests
    assert "template" not in sent.json  # the built-in body
    assert "took longer than the time limit" in caplog.text


@pytest.mark.anyio
async def test_polls_go_on_while_a_slow_card_template_renders_and_its_time_limit_ends_it(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A live card's slow template renders in a thread too; its time limit ends it."""
    clock = MonotonicSteps()
    settings = rig.with_sessions("s1")
    slow = SlackTemplate(text=SLOW_BODY.removesuffix("{}") + "done")
    rule = Rule("completed", ("session.completed",), ("team-slack",), template=slow)
    settings = replace(settings, rules=(rule,))
    renderer = SendTimeRenderer(lambda: settings, clock=clock, time_limit=2.0)
    watcher = Watcher(settings, render=renderer.message, cards=renderer.cards)
    try:
        await complete_s1(rig, watcher)
        polled_while_rendering, posted_while_rendering = await poll_while_rendering(
            watcher, clock, lambda: rig.slack.calls("chat.postMessage")
        )
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert (polled_while_rendering, posted_while_rendering) == (3, 0)
    assert rig.slack.calls("chat.postMessage") == 1  # the built-in card
    assert "the card is built-in instead" in caplog.text
    assert "took longer than the time limit" in caplog.text
