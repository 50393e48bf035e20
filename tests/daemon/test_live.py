"""What the parts share: a stop cuts every wait short and ends the fixed ticks."""

from __future__ import annotations

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
            tg.start_soon(live.every, 3600.0, job)
            await anyio.wait_all_tasks_blocked()
            live.stop()
    assert ran == []
    assert live.stopping


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
