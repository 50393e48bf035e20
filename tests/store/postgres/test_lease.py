"""PgLease against the real server: take, renew, lose, resign, wake, reconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import pytest

from tests.leasedb import create_lease_table, expire_lease, terminate
from watcher.core.lease import Renewal
from watcher.store.errors import StoreError
from watcher.store.postgres import PostgresStore
from watcher.store.postgres.lease import PgLease, application_name, failure_reason

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]
TTL = timedelta(seconds=10)


@pytest.fixture
def url(pg_url: str) -> str:
    """A scratch database with the lease table."""
    create_lease_table(pg_url)
    return pg_url


@pytest.fixture
async def pair(url: str) -> AsyncIterator[tuple[PgLease, PgLease]]:
    """Two replicas' leases on one database, closed after the test."""
    a, b = PgLease(url, "host-a:1:aaaa", TTL), PgLease(url, "host-b:2:bbbb", TTL)
    yield a, b
    await a.aclose()
    await b.aclose()


async def test_only_one_replica_takes_a_live_lease(pair: tuple[PgLease, PgLease]) -> None:
    """The first acquire gets epoch 1; another replica then sees who holds it."""
    a, b = pair
    assert (await a.acquire()).epoch == 1
    second = await b.acquire()
    assert second.epoch is None
    assert second.failure is None
    assert second.held_by is not None
    assert (second.held_by.holder, second.held_by.epoch) == ("host-a:1:aaaa", 1)
    assert 8 < second.held_by.expires_in <= 10


async def test_renew_keeps_our_epoch_and_a_takeover_makes_it_lost(
    url: str, pair: tuple[PgLease, PgLease]
) -> None:
    """Renew succeeds for the holder's epoch; after expiry another takes epoch 2 and
    the old holder's renewal finds no row."""
    a, b = pair
    assert (await a.acquire()).epoch == 1
    assert (await a.renew(1)).outcome is Renewal.RENEWED
    assert (await b.renew(1)).outcome is Renewal.LOST  # right epoch, wrong holder
    expire_lease(url)
    assert (await a.renew(1)).outcome is Renewal.LOST  # expired: renew cannot revive it
    assert (await b.acquire()).epoch == 2
    assert (await a.renew(1)).outcome is Renewal.LOST
    current = await a.current()
    assert current is not None
    assert (current.holder, current.epoch) == ("host-b:2:bbbb", 2)


async def test_resign_expires_the_lease_and_wakes_a_waiting_standby(
    pair: tuple[PgLease, PgLease],
) -> None:
    """A standby waiting on LISTEN wakes at the leader's resign and takes the next epoch."""
    a, b = pair
    assert (await a.acquire()).epoch == 1
    assert (await b.acquire()).epoch is None  # b is connected and listening now
    woken: list[bool] = []

    async def standby() -> None:
        woken.append(await b.wait(30.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(standby)
        await anyio.wait_all_tasks_blocked()  # b is blocked in its wait, no guessed delay
        assert await a.resign(1) is True
    assert woken == [True]
    assert (await b.acquire()).epoch == 2
    assert await a.resign(1) is False  # not ours any more


async def test_wait_without_a_notification_times_out(pair: tuple[PgLease, PgLease]) -> None:
    """No NOTIFY: wait returns False after its time."""
    a, _ = pair
    assert await a.wait(0.2) is False


async def test_a_terminated_connection_is_a_failed_call_then_a_reconnect(
    url: str, pair: tuple[PgLease, PgLease]
) -> None:
    """pg_terminate_backend: the next renewal is broken (no exception), the one after
    reconnects and renews the same epoch."""
    a, _ = pair
    assert (await a.acquire()).epoch == 1
    assert terminate(url, application_name(a.holder)) == 1
    failed = await a.renew(1)
    assert failed.outcome is Renewal.BROKEN
    assert failed.failure
    assert (await a.renew(1)).outcome is Renewal.RENEWED
    assert a.connects == 2


async def test_an_unreachable_server_is_a_failure_without_the_password() -> None:
    """Nothing listens: every call returns a failure naming no secret."""
    lease = PgLease(
        "postgresql://watcher:hunter2secret@127.0.0.1:1/db", "h:1:x", TTL, call_timeout=2.0
    )
    got = await lease.acquire()
    assert got.epoch is None
    assert got.failure is not None
    assert "hunter2secret" not in got.failure
    renewed = await lease.renew(1)
    assert renewed.outcome is Renewal.FAILED
    assert await lease.resign(1) is False
    assert await lease.current() is None
    assert await lease.wait(0.1) is False
    assert "hunter2secret" not in repr(lease)


def test_failure_reasons_are_one_line() -> None:
    """Timeouts say so; other errors give their type and a single line."""
    assert failure_reason(TimeoutError()) == "the database did not answer in time"
    assert failure_reason(OSError("a\nb")) == "OSError: a b"
    assert failure_reason(OSError()) == "OSError"


async def test_a_write_left_open_by_a_paused_leader_does_not_block_a_takeover(
    pg_url: str,
) -> None:
    """A leader stopped inside a fenced write holds the lease row's share lock; the
    server ends that idle transaction, so a standby takes the expired lease soon after
    (instead of waiting for the paused process for ever), and that write never lands."""
    store = PostgresStore(pg_url, fenced=True)  # migrates: the lease table is there
    # A one-second lease: it lapses while the write stays open.
    a = PgLease(pg_url, "host-a:1:aaaa", timedelta(seconds=1))
    b = PgLease(pg_url, "host-b:2:bbbb", TTL)
    try:
        assert (await a.acquire()).epoch == 1
        store.set_epoch(1)
        taken: list[int | None] = []

        async def stopped_inside_a_write() -> None:
            with store._transaction():  # the fence's FOR SHARE lock, then the process "stops"
                with anyio.fail_after(30):
                    while not taken or taken[-1] is None:
                        taken.append((await b.acquire()).epoch)

        with pytest.raises(StoreError, match="idle-in-transaction"):
            await stopped_inside_a_write()
        # The standby leads; the stopped write, when its process goes on, commits nothing.
        assert taken[-1] == 2
    finally:
        await a.aclose()
        await b.aclose()
        store.close()
