"""A complete loopback rig: simulator, fake Slack, Slack webhook and webhook receiver."""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from tests.webhook_schema import BodyChecker
from watcher.core.secret import Secret
from watcher.core.settings import (
    FactorySettings,
    PollSettings,
    Rule,
    Settings,
    SlackTarget,
    SlackWebhookTarget,
    WatchedSession,
    WebhookTarget,
)
from watcher.daemon import Watcher
from watcher.testing.sim import FactorySimulator
from watcher.testing.sinks import FakeSlack, FakeSlackWebhook, WebhookReceiver

API_KEY = "fk-canary-api-key-7f3a9c"
SLACK_TOKEN = "xoxb-canary-slack-token-51e2"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"canary-webhook-secret-0123456789").decode()
CHANNEL = "C0123ABCD"
HOOK_PATH = "/services/T000/B000/canaryhookpath"

RULES = (
    Rule(
        name="finished",
        on=("session.status_changed",),
        notify=("team-slack",),
        from_status=("running",),
        to_status=("idle",),
    ),
    Rule(name="completed", on=("session.completed",), notify=("ci",)),
    Rule(name="gone", on=("session.archived", "session.deleted"), notify=("ops", "ci")),
    Rule(name="outage", on=("watcher.api_unavailable", "watcher.api_recovered"), notify=("ops",)),
)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until truthy or fail after `timeout` seconds (for threads and sockets)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Rig:
    """The running servers and a matching `Settings`."""

    sim: FactorySimulator
    slack: FakeSlack
    slack_hook: FakeSlackWebhook
    receiver: WebhookReceiver
    settings: Settings
    bodies: BodyChecker

    def with_sessions(self, *ids: str, **labels: str) -> Settings:
        """Settings watching `ids` (created in the simulator as running sessions)."""
        for session_id in ids:
            self.sim.add_session(session_id, title=f"Title of {session_id}", status="running")
        sessions = tuple(WatchedSession(id=i, labels=dict(labels)) for i in ids)
        self.settings = replace(self.settings, sessions=sessions)
        return self.settings


async def run_driven(
    watcher: Watcher,
    drive: Callable[[], Awaitable[None]],
    *,
    within: float,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run `watcher` with `drive` beside it until `drive` stops it; fail after `within` s."""
    with anyio.fail_after(within):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await watcher.run(on_ready=on_ready, handle_signals=False)


def completed(rig: Rig, session: str) -> int:
    """How many `session.completed` webhooks for `session` the receiver accepted."""
    return sum(
        1
        for r in rig.receiver.requests
        if r.status < 300
        and r.json["type"] == "session.completed"
        and r.json["session"]["id"] == session
    )


def make_settings(
    sim_url: str, slack_url: str, hook_url: str, receiver_url: str, state: Path
) -> Settings:
    """Settings for the rig, fast intervals and no pacing."""
    return Settings(
        factory=FactorySettings(
            api_key=Secret(API_KEY),
            base_url=sim_url,
            timeout=timedelta(seconds=2),
            concurrency=4,
            unavailable_after=timedelta(seconds=1),
            # Fast rig intervals: the budget is not what a test measures unless it says so.
            max_requests_per_second=1000.0,
        ),
        state_path=state,
        poll=PollSettings(interval=timedelta(milliseconds=200), jitter=0.1),
        targets={
            "team-slack": SlackTarget(
                name="team-slack",
                token=Secret(SLACK_TOKEN),
                channel=CHANNEL,
                api_url=slack_url + "/api/",
                min_interval=timedelta(0),
            ),
            "ops": SlackWebhookTarget(
                name="ops", url=Secret(hook_url + HOOK_PATH), min_interval=timedelta(0)
            ),
            "ci": WebhookTarget(
                name="ci",
                url=receiver_url + "/factory",
                secret=Secret(WEBHOOK_SECRET),
                allow_http=True,
            ),
        },
        rules=RULES,
    )


@contextmanager
def running_rig(
    tmp_path: Path,
    *,
    slack_interval: float = 0.0,
    clock: Callable[[], float] = time.time,
) -> Iterator[Rig]:
    """Start every server on 127.0.0.1 (the simulator on `clock` when given); stop them after."""
    with ExitStack() as stack:
        sim = stack.enter_context(FactorySimulator(API_KEY, clock=clock))
        slack = stack.enter_context(
            FakeSlack(SLACK_TOKEN, (CHANNEL,), slack_interval, epoch=time.time)
        )
        hook = stack.enter_context(FakeSlackWebhook())
        bodies = BodyChecker()
        receiver = stack.enter_context(WebhookReceiver(WEBHOOK_SECRET, on_message=bodies))
        settings = make_settings(sim.url, slack.url, hook.url, receiver.url, tmp_path / "state.db")
        yield Rig(sim, slack, hook, receiver, settings, bodies)
        # Every body the watcher sent in the test follows the published schema and order.
        assert not bodies.problems, bodies.problems
