"""What the parts share: a stop cuts every wait short and ends the fixed ticks."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest

from tests.daemon.offline import API_KEY, IdleSource, offline_settings
from watcher.daemon.live import Live


@pytest.mark.anyio
async def test_a_stop_ends_a_fixed_tick_without_running_it(tmp_path: Path) -> None:
    """A tick loop waiting for its next turn returns at once when the run stops."""
    live = Live(offline_settings(tmp_path), IdleSource())
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(live.every, 3600.0, job, what="job"))
            await anyio.wait_all_tasks_blocked()
            live.stop()
    assert ran == []
    assert live.stopping


@pytest.mark.anyio
async def test_a_turn_that_raises_is_logged_and_the_next_turn_comes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One failed turn of a fixed tick (rule timer, pruner, heartbeat) never ends the loop."""
    live = Live(offline_settings(tmp_path), IdleSource())
    turns: list[int] = []

    async def job() -> None:
        turns.append(1)
        if len(turns) == 1:
            raise RuntimeError("a bug")
        live.stop()

    with anyio.fail_after(5):
        await live.every(0.001, job, what="the job")
    assert turns == [1, 1]
    assert [r.getMessage() for r in caplog.records] == ["the job failed; trying again in 0.001s"]


@pytest.mark.anyio
async def test_a_wait_cut_short_by_a_stop_says_so(tmp_path: Path) -> None:
    """`unless_stopping` is True when the wait ended on its own, False when a stop cut it."""
    live = Live(offline_settings(tmp_path), IdleSource())
    assert await live.unless_stopping(anyio.lowlevel.checkpoint)
    results: list[bool] = []

    async def wait_forever() -> None:
        results.append(await live.unless_stopping(anyio.Event().wait))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_forever)
            await anyio.wait_all_tasks_blocked()
            live.stop()
    assert results == [False]


def test_redaction_masks_the_configured_secrets(tmp_path: Path) -> None:
    """Anything logged or stored through `redact` loses the API key."""
    live = Live(offline_settings(tmp_path), IdleSource())
    assert API_KEY not in live.redact(f"failed with {API_KEY}")


@pytest.mark.anyio
async def test_a_client_is_idle_once_every_borrowed_call_returned(tmp_path: Path) -> None:
    """`idle` waits for the last of the calls borrowed on a client, and no longer."""
    live = Live(offline_settings(tmp_path), IdleSource())
    first, second = live.borrow(), live.borrow()
    assert live.in_flight(first) == 2
    idle: list[bool] = []

    async def wait_idle() -> None:
        await live.idle(first)
        idle.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_idle)
            await anyio.wait_all_tasks_blocked()
            live.give_back(first)
            await anyio.wait_all_tasks_blocked()
            assert idle == []
            live.give_back(second)
    assert idle == [True]
    assert live.in_flight(first) == 0
    await live.idle(first)  # idle already: returns at once


def test_a_replaced_configs_secrets_are_masked_only_while_retired(tmp_path: Path) -> None:
    """`secrets` is the config's, plus a replaced config's while something built from it is
    open; a value in both is listed once."""
    live = Live(offline_settings(tmp_path), IdleSource())
    assert live.secrets == (API_KEY,)
    live.retired_secrets = (API_KEY, "fk-old-key-0001")
    assert live.secrets == (API_KEY, "fk-old-key-0001")
    assert live.redact("fk-old-key-0001") != "fk-old-key-0001"
    live.retired_secrets = ()
    assert live.redact("fk-old-key-0001") == "fk-old-key-0001"
