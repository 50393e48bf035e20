"""Lanes: one per target, woken by name, held by a Retry-After, replaced without overlap."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.core.factories import event, ref
from watcher.core.message import Message, SendOutcome, Sent
from watcher.core.rules import Route
from watcher.core.settings import Target, WebhookTarget
from watcher.delivery import Dispatched
from watcher.delivery.hooks import run_inline
from watcher.delivery.lanes import Lanes, LaneWork
from watcher.notifiers.base import Notifier
from watcher.store import OutboxRow, SqliteStore, UnreadableRow

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


class QuietNotifier:
    """A notifier the lanes hand to the dispatch; these tests never send through it."""

    target_name = "any"

    async def send(self, message: Message, *, now: datetime) -> SendOutcome:
        """Accept."""
        return Sent()

    async def aclose(self) -> None:
        """Nothing to release."""


NOTIFIER = QuietNotifier()


def hook(name: str, **changes: object) -> WebhookTarget:
    """A webhook target named `name`."""
    return WebhookTarget(name=name, url=f"https://example.invalid/{name}", **changes)  # type: ignore[arg-type]


@dataclass
class Dispatcher:
    """Stands in for the worker's dispatch: notes (target, session), marks the row delivered."""

    store: SqliteStore
    sent: list[tuple[str, str | None]] = field(default_factory=list)
    gate: anyio.Event | None = None  # the first send waits here, when set
    on_send: Callable[[Target], None] = lambda _target: None

    async def __call__(
        self, target: Target, notifier: Notifier, row: OutboxRow | UnreadableRow
    ) -> Dispatched:
        """Send `row` (at once, or once the gate opens)."""
        assert isinstance(row, OutboxRow)
        self.sent.append((target.name, row.session_id))
        self.on_send(target)
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        self.store.mark_delivered(row.id, T0, None)
        return Dispatched((row.id,), True)


@dataclass
class Desk:
    """Lanes on a throwaway store and a settable clock, dispatching to `dispatcher`."""

    store: SqliteStore
    now: datetime = T0
    dispatcher: Dispatcher = field(init=False)
    lanes: Lanes = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(self.store)
        work = LaneWork(self.store, run_inline, lambda: self.now, self.dispatcher, lambda: None)
        self.lanes = Lanes(work)

    def queue(self, *sessions: str, targets: tuple[str, ...] = ("a",)) -> None:
        """One event per session, each for every target in `targets`."""
        events = [event(id=f"e-{s}", session=ref(id=s)) for s in sessions]
        self.store.record_events(events, [(e, Route("r", t)) for e in events for t in targets], T0)


@pytest.fixture
def desk() -> Iterator[Desk]:
    """A desk on an in-memory store."""
    store = SqliteStore(":memory:")
    yield Desk(store)
    store.close()


@pytest.mark.anyio
async def test_wake_reaches_only_the_named_lanes(desk: Desk) -> None:
    """Rows queued while lanes sleep go out when their lane is woken, not before."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            desk.lanes.set_targets(
                {"a": hook("a"), "b": hook("b")}, {"a": NOTIFIER, "b": NOTIFIER}, tg
            )
            await anyio.wait_all_tasks_blocked()
            desk.queue("s1", targets=("a", "b"))
            desk.lanes.wake(["a"])
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1")]
            desk.lanes.wake()
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1"), ("b", "s1")]
            desk.lanes.stop()


@pytest.mark.anyio
async def test_a_held_lane_sends_nothing_until_the_hold_has_passed(desk: Desk) -> None:
    """A held lane leaves due rows alone until its time; holding an unknown target is a no-op."""
    desk.queue("s1")
    until = T0 + timedelta(seconds=30)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            desk.lanes.set_targets({"a": hook("a")}, {"a": NOTIFIER}, tg)
            desk.lanes.hold("a", until)
            desk.lanes.hold("nobody", until)
            await anyio.wait_all_tasks_blocked()
            lane = desk.lanes.get("a")
            assert lane is not None
            assert lane.held_until == until
            assert desk.dispatcher.sent == []
            desk.now = until + timedelta(seconds=1)
            desk.lanes.wake(["a"])
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1")]
            desk.lanes.stop()
    assert desk.lanes.get("nobody") is None


@pytest.mark.anyio
async def test_a_paced_lane_stops_its_batch_when_a_send_holds_it(desk: Desk) -> None:
    """Rows in turn: a Retry-After met by the first row keeps the rest of the batch back."""
    desk.queue("s1", "s2", "s3")
    desk.dispatcher.on_send = lambda target: desk.lanes.hold(target.name, T0 + timedelta(minutes=1))
    paced = hook("a", min_interval=timedelta(seconds=1))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            desk.lanes.set_targets({"a": paced}, {"a": NOTIFIER}, tg)
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1")]
            desk.lanes.stop()


@pytest.mark.anyio
async def test_a_changed_target_gets_a_new_lane_once_the_old_one_has_finished_its_send(
    desk: Desk,
) -> None:
    """The new lane waits for the old one's send in flight, so no row is in flight twice."""
    desk.queue("s1")
    desk.dispatcher.gate = gate = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            desk.lanes.set_targets({"a": hook("a")}, {"a": NOTIFIER}, tg)
            await anyio.wait_all_tasks_blocked()
            old = desk.lanes.get("a")
            desk.lanes.set_targets({"a": hook("a", headers={"X-New": "1"})}, {"a": NOTIFIER}, tg)
            assert desk.lanes.get("a") is not old
            desk.queue("s2")
            desk.lanes.wake()
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1")]  # s1 still in flight on the old lane
            gate.set()
            await anyio.wait_all_tasks_blocked()
            assert desk.dispatcher.sent == [("a", "s1"), ("a", "s2")]
            desk.lanes.set_targets({}, {}, tg)
            assert len(desk.lanes) == 0
