"""Retired clients and notifiers: closed once nothing uses them, not at exit, and their
config's secrets masked exactly that long.

Real HTTP on 127.0.0.1: the simulator serves the API, a webhook receiver holds a
send open while a reload replaces its target; connections are read from the
kernel's socket table (/proc/net/tcp).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from tests.rig import Rig, run_driven, running_rig, wait_for
from watcher.core.outbox import OutboxStatus
from watcher.core.secret import MASK
from watcher.core.settings import Rule, Settings, WebhookTarget
from watcher.daemon import Watcher
from watcher.ops.logs import RedactingFilter
from watcher.testing.sinks import ReceivedWebhook, WebhookReceiver

ESTABLISHED = "01"


def connections_to(port: int) -> set[int]:
    """Local ports of this host's established TCP connections to 127.0.0.1:`port`."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state == ESTABLISHED and int(remote.rsplit(":", 1)[1], 16) == port:
                found.add(int(local.rsplit(":", 1)[1], 16))
    return found


class Gate:
    """Holds the first webhook received open (no answer yet) until `open()`."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._open = threading.Event()

    def __call__(self, received: ReceivedWebhook) -> None:
        """Called in the receiver's request thread before it answers."""
        if not self.arrived.is_set():
            self.arrived.set()
            self._open.wait(20)

    def open(self) -> None:
        """Let the held request be answered."""
        self._open.set()


@pytest.fixture
def gate() -> Gate:
    """A gate for the first webhook."""
    return Gate()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


@pytest.fixture
def receiver(gate: Gate) -> Iterator[WebhookReceiver]:
    """An unsigned webhook receiver that holds its first request at the gate."""
    with WebhookReceiver(on_message=gate) as running:
        yield running


def hooked(rig: Rig, receiver: WebhookReceiver, key: str) -> Settings:
    """s1 watched; its completion goes to the webhook `ci`, whose X-Key header is `key`."""
    settings = rig.with_sessions("s1")
    target = WebhookTarget(
        name="ci", url=receiver.url + "/hook", allow_http=True, headers={"X-Key": key}
    )
    rule = Rule(name="done", on=("session.completed",), notify=("ci",))
    return replace(settings, targets={"ci": target}, rules=(rule,))


def rekeyed(settings: Settings, key: str, timeout: float) -> Settings:
    """`settings` with a new X-Key on `ci` and a new API timeout (a new client)."""
    target = settings.targets["ci"]
    assert isinstance(target, WebhookTarget)
    factory = replace(settings.factory, timeout=timedelta(seconds=timeout))
    return replace(
        settings, factory=factory, targets={"ci": replace(target, headers={"X-Key": key})}
    )


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait for `condition` off the event loop."""
    await anyio.to_thread.run_sync(lambda: wait_for(condition, timeout=15, what=what))


def retired(watcher: Watcher, thing: object) -> bool:
    """Whether `thing` is retired and not closed yet."""
    return any(r is thing for r in watcher.reloader.retired)


def masked(redactor: RedactingFilter, text: str) -> str:
    """What the log filter makes of a record saying `text`."""
    record = logging.LogRecord("watcher.test", logging.INFO, __file__, 1, "%s", (text,), None)
    redactor.filter(record)
    return record.getMessage()


@pytest.mark.anyio
async def test_replaced_client_and_notifier_close_once_unused(
    rig: Rig, receiver: WebhookReceiver, gate: Gate
) -> None:
    """A reload replaces the API client and a webhook notifier mid-send: the client closes
    at once, the notifier after its send completes (delivered once), both before exit, and
    the old header is masked in the logs exactly until the old notifier is closed."""
    settings = hooked(rig, receiver, "key-old-0001")
    pending: list[Settings] = []
    watcher = Watcher(settings, reload=pending.pop)
    redactor = RedactingFilter()
    live = watcher.live
    redactor.follow(lambda: live.secrets)  # as `run` wires it
    sim_port, hook_port = int(rig.sim.url.rsplit(":", 1)[1]), receiver.port

    async def drive() -> None:
        await until(lambda: watcher.store.load_state("s1") is not None, "s1 read")
        old_client, old_notifier = watcher.live.source, watcher.notifiers["ci"]
        await until(lambda: connections_to(sim_port), "the client's keep-alive connection")
        api_before = connections_to(sim_port)
        rig.sim.complete_run("s1")
        await anyio.to_thread.run_sync(lambda: gate.arrived.wait(15))
        hook_before = connections_to(hook_port)
        assert hook_before  # the send is in flight on the old notifier's connection
        pending.append(rekeyed(settings, "key-new-0002", timeout=3.0))
        assert await watcher.reload()
        assert watcher.live.source is not old_client
        assert watcher.notifiers["ci"] is not old_notifier
        # The old client has no call in flight: closed now, its connections released.
        await until(lambda: not retired(watcher, old_client), "the old client closed")
        await until(lambda: not connections_to(sim_port) & api_before, "API connections gone")
        # The old notifier is still sending: open, and its config's header still masked.
        assert retired(watcher, old_notifier)
        assert hook_before <= connections_to(hook_port)
        assert masked(redactor, "echo key-old-0001 key-new-0002") == f"echo {MASK} {MASK}"
        gate.open()
        await until(lambda: not retired(watcher, old_notifier), "the old notifier closed")
        await until(lambda: not connections_to(hook_port) & hook_before, "hook connection gone")
        delivered = watcher.store.list_outbox(OutboxStatus.DELIVERED)
        assert [r.target for r in delivered] == ["ci"]  # the in-flight send completed
        assert masked(redactor, "echo key-old-0001") == "echo key-old-0001"  # no longer held
        assert masked(redactor, "echo key-new-0002") == f"echo {MASK}"
        watcher.request_stop()

    await run_driven(watcher, drive, within=40)
    watcher.store.close()
    assert [r.status for r in receiver.requests] == [204]  # sent once, never again
    assert receiver.requests[0].headers["x-key"] == "key-old-0001"


@pytest.mark.anyio
async def test_the_redactor_holds_the_current_secrets_after_many_reloads(
    rig: Rig, receiver: WebhookReceiver, gate: Gate
) -> None:
    """Ten reloads, each with a new header value: the masked list stays the current
    config's, and every replaced value is no longer in it once its notifier closed."""
    gate.open()
    settings = hooked(rig, receiver, "key-0000")
    pending: list[Settings] = []
    watcher = Watcher(settings, reload=pending.pop)
    redactor = RedactingFilter()
    live = watcher.live
    redactor.follow(lambda: live.secrets)
    sizes: list[int] = []

    async def drive() -> None:
        await until(lambda: watcher.store.load_state("s1") is not None, "s1 read")
        for n in range(1, 11):
            pending.append(rekeyed(settings, f"key-{n:04d}", timeout=2.0 + n / 10))
            assert await watcher.reload()
            await until(lambda: not watcher.reloader.retired, "the replaced ones closed")
            sizes.append(len(redactor.secrets))
        watcher.request_stop()

    await run_driven(watcher, drive, within=40)
    watcher.store.close()
    current = live.settings.secret_values()
    assert sizes == [len(current)] * 10
    assert set(redactor.secrets) == set(current)
    assert "key-0010" in redactor.secrets
    assert not {f"key-{n:04d}" for n in range(10)} & set(redactor.secrets)
