"""A report through the outbox like any event: polled history in, Slack and webhooks out.

The simulator serves the sessions, the watcher polls them through the real
intake into its store, the report is built from that store and queued, and the
delivery worker sends it with the real notifiers: slack-sdk to the fake Slack,
an incoming webhook, and a signed webhook whose body the rig checks against the
published schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.daemon.parts import StepClock, clocked_rig
from tests.rig import Rig
from watcher.core.report import build_report, report_event, report_rule
from watcher.core.rules import Route
from watcher.core.settings import ReportSpec, Settings, SlackTemplate, WatchedSession
from watcher.daemon import Watcher
from watcher.store import OutboxStatus

START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> StepClock:
    """A clock at START."""
    return StepClock(START)


@pytest.fixture
def rig(tmp_path: Path, clock: StepClock) -> Iterator[Rig]:
    """The loopback rig whose simulator reads the test's clock."""
    with clocked_rig(tmp_path, clock) as running:
        yield running


async def _day(rig: Rig, watcher: Watcher, clock: StepClock) -> None:
    """Three sessions over an hour: s1 finishes, s2 is interrupted, s3 starts and runs on."""
    for sid in ("s1", "s2", "s3"):
        rig.sim.add_session(sid, title=f"Task {sid}", status="idle")
    await watcher.poll_all()
    clock.now += 60
    rig.sim.start_run("s1")
    rig.sim.start_run("s2")
    await watcher.poll_all()
    clock.now += 600
    rig.sim.complete_run("s1")
    rig.sim.interrupt("s2")
    rig.sim.start_run("s3")
    await watcher.poll_all()
    clock.now += 600


def _settings(rig: Rig, *reports: ReportSpec) -> Settings:
    sessions = tuple(WatchedSession(id=s, name=f"task-{s}") for s in ("s1", "s2", "s3"))
    return replace(rig.settings, sessions=sessions, rules=(), reports=reports)


async def _send(watcher: Watcher, spec: ReportSpec, clock: StepClock) -> None:
    """Build the report for the last day from the watcher's store, queue it, deliver."""
    now = clock.utc()
    history = watcher.store.report_history(now - timedelta(days=1), now)
    report = build_report(
        spec, history, now - timedelta(days=1), now, now, watcher.settings.factory.session_url
    )
    event = report_event(spec, report, now)
    routes = [(event, Route(report_rule(spec.name), target)) for target in spec.notify]
    watcher.store.record_events([event], routes, now)
    await watcher.deliver_due()


@pytest.mark.anyio
async def test_a_report_reaches_slack_and_webhooks_through_the_outbox(
    rig: Rig, clock: StepClock
) -> None:
    """One Slack message with sections, one incoming-webhook post, one valid `report` body."""
    spec = ReportSpec("daily", "0 9 * * *", notify=("team-slack", "ops", "ci"))
    watcher = Watcher(_settings(rig, spec), clock=clock.utc)
    try:
        await _day(rig, watcher, clock)
        await _send(watcher, spec, clock)
        rows = watcher.store.list_outbox()
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert {r.status for r in rows} == {OutboxStatus.DELIVERED}
    [posted] = rig.slack.messages
    sections = [b["text"]["text"] for b in posted.blocks if b["type"] == "section"]
    assert sections[0].startswith(":bar_chart: *daily*: 1 finished, 1 interrupted, 3 started")
    finished = next(s for s in sections if s.startswith("*Finished (1)*"))
    assert "<https://app.factory.ai/sessions/s1|task-s1>" in finished
    assert posted.text.startswith(":bar_chart: *daily*")
    [hooked] = rig.slack_hook.messages
    assert hooked.payload["text"].startswith(":bar_chart: *daily*")
    [body] = [r.json for r in rig.receiver.requests]
    assert (body["type"], body["rule"], body["session"]) == ("report", "report:daily", None)
    assert body["id"] == f"report:daily:{clock.utc().isoformat()}"
    assert body["data"]["counts"]["finished"] == 1
    assert [s["id"] for s in body["data"]["sessions"]["interrupted"]] == ["s2"]
    assert rig.bodies.checked == 1  # and the rig found it valid against the schema


@pytest.mark.anyio
async def test_a_reports_template_shapes_its_slack_message(rig: Rig, clock: StepClock) -> None:
    """A report's own template is used for its message, as a rule's is."""
    template = SlackTemplate(text="{{ data.counts.finished }} done, {{ data.report }}")
    spec = ReportSpec("brief", "0 9 * * *", notify=("team-slack",), template=template)
    watcher = Watcher(_settings(rig, spec), clock=clock.utc)
    try:
        await _day(rig, watcher, clock)
        await _send(watcher, spec, clock)
    finally:
        await watcher.aclose()
        watcher.store.close()
    assert [m.text for m in rig.slack.messages] == ["1 done, brief"]
