"""`factory-watcher demo`: the real daemon against a local simulator and local sinks.

Needs no credentials and no internet: the Factory API, Slack and a webhook
receiver all run on 127.0.0.1 in this process, and what they receive is
printed to the terminal.
"""

from __future__ import annotations

import base64
import random
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

import anyio

from watcher.config.loader import load_settings
from watcher.daemon import Watcher, run_until
from watcher.testing.sim import Autopilot, AutopilotOdds, FactorySimulator
from watcher.testing.sinks import (
    FakeSlack,
    FakeSlackWebhook,
    ReceivedWebhook,
    SlackPost,
    SlackWebhookPost,
    WebhookReceiver,
)

DEMO_CHANNEL = "C0DEMO"
TITLES = (
    "Refactor the billing module",
    "Fix flaky integration tests",
    "Write the release notes",
    "Upgrade to Python 3.12",
    "Add OpenTelemetry tracing",
    "Hunt the memory leak",
)

CONFIG_TEMPLATE = """\
# Written by `factory-watcher demo`; every endpoint is on 127.0.0.1.
factory:
  base_url: {api_url}
  api_key: ${{DEMO_FACTORY_API_KEY}}
  session_url: https://app.factory.ai/sessions/{{id}}
poll:
  interval: 1s
  jitter: 10%
state:
  path: {state}
sessions:
{sessions}
targets:
  team-slack:
    type: slack
    token: ${{DEMO_SLACK_TOKEN}}
    channel: {channel}
    api_url: {slack_url}/api/
  ops-webhook:
    type: slack_webhook
    url: ${{DEMO_SLACK_WEBHOOK_URL}}
  ci:
    type: webhook
    url: {webhook_url}/factory
    secret: ${{DEMO_WEBHOOK_SECRET}}
    allow_http: true
rules:
  - name: finished
    on: session.finished
    notify: [team-slack]
  - name: interrupted
    on: session.interrupted
    settle: 2s
    notify: [team-slack]
  - name: spend
    on: session.usage_crossed
    threshold: {{factory_credits: 2}}
    notify: [ops-webhook]
  - name: completed
    on: session.completed
    notify: [ci]
  - name: archived-or-deleted
    on: [session.archived, session.deleted]
    notify: [ops-webhook, ci]
"""


class _Printer:
    """Prints what each sink received, one line per notification, thread-safely."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.count = 0

    def line(self, text: str) -> None:
        with self._lock:
            self.count += 1
            print(text, file=self._out, flush=True)

    def slack(self, post: SlackPost) -> None:
        kind = "card updated" if post.edited else "thread" if post.thread_ts else "card"
        self.line(f"  [slack #{post.channel} {kind}] {post.text}")

    def slack_webhook(self, post: SlackWebhookPost) -> None:
        self.line(f"  [slack webhook] {post.payload.get('text', '')}")

    def webhook(self, received: ReceivedWebhook) -> None:
        body = received.json if isinstance(received.json, dict) else {}
        session = body.get("session") or {}
        verdict = "signature ok" if received.signature_valid else "BAD SIGNATURE"
        self.line(
            f"  [webhook {verdict}] {body.get('type')} {session.get('id')} {body.get('data')}"
        )


def run_demo(*, duration: float | None, sessions: int, out: TextIO) -> int:
    """Start the simulator and sinks, run the real daemon against them, print deliveries."""
    printer = _Printer(out)
    api_key = "fk-demo-" + secrets.token_hex(8)
    slack_token = "xoxb-demo-" + secrets.token_hex(8)
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with (
        tempfile.TemporaryDirectory(prefix="factory-watcher-demo-") as tmp,
        FactorySimulator(api_key) as sim,
        FakeSlack(slack_token, (DEMO_CHANNEL,), on_message=printer.slack, epoch=time.time) as slack,
        FakeSlackWebhook(on_message=printer.slack_webhook) as slack_hook,
        WebhookReceiver(webhook_secret, on_message=printer.webhook) as receiver,
    ):
        rng = random.Random(7)
        ids = []
        for index in range(sessions):
            session_id = f"demo-{index + 1:02d}"
            sim.add_session(session_id, title=TITLES[index % len(TITLES)])
            ids.append(session_id)
        config = Path(tmp) / "config.yaml"
        config.write_text(
            CONFIG_TEMPLATE.format(
                api_url=sim.url,
                state=Path(tmp) / "state.db",
                sessions="\n".join(f"  - id: {sid}\n    labels: {{team: demo}}" for sid in ids),
                channel=DEMO_CHANNEL,
                slack_url=slack.url,
                webhook_url=receiver.url,
            )
        )
        env = {
            "DEMO_FACTORY_API_KEY": api_key,
            "DEMO_SLACK_TOKEN": slack_token,
            "DEMO_SLACK_WEBHOOK_URL": f"{slack_hook.url}/services/T000/B000/demo",
            "DEMO_WEBHOOK_SECRET": webhook_secret,
        }
        settings = load_settings(config, env=env)
        print(
            f"factory-watcher demo: simulated Factory API at {sim.url} with "
            f"{sessions} session(s); Slack, Slack webhook and webhook sinks on 127.0.0.1.",
            file=out,
            flush=True,
        )
        print(
            "Sessions start, run, finish, get archived or deleted; notifications appear "
            "below as the sinks receive them." + (" Ctrl-C to stop." if not duration else ""),
            file=out,
            flush=True,
        )
        with Autopilot(sim, rng, AutopilotOdds(mean_dwell_s=4.0)) as autopilot:
            autopilot.run_in_thread(0.5)
            watcher = Watcher(settings, reload=lambda: load_settings(config, env=env))
            anyio.run(run_until, watcher, duration, backend="asyncio")
        print(f"demo finished: {printer.count} notification(s) received.", file=out, flush=True)
    return 0
