"""Outside run of scheduled reports: a report every minute over a simulated day of sessions.

The real daemon (`python -m watcher run -c CONFIG`) runs as a subprocess for
about three minutes against the simulator, a signed webhook receiver (target
`ci`) and a fake Slack Web API (target `team-slack`), all on 127.0.0.1 in this
process. A driver thread plays a working day of agent sessions, compressed:
sessions (created before the daemon starts) start runs, finish them or are
interrupted, start again, and some are archived or deleted, each step a few
poll intervals after the last so the daemon sees every one. One report,
`minutely` (`* * * * *`, since_last), goes to both targets.

What is checked, and printed:

* one report per minute at each target: the webhook ids are
  `report:minutely:T` for every minute T from the first report to the last,
  each received once; Slack got the same number of report messages;
* counts match the history: each report's counts and per-session times of
  archived, deleted and completed are those of the events the daemon recorded
  in the report's window (read from its state database), and summed over all
  reports (since_last windows tile the run) every kind equals what the driver
  did to the sessions;
* every session a report names is linked (`factory.session_url`), in the
  webhook data and in the Slack message;
* every webhook body is valid against docs/webhook-event.schema.json, and
  signed.

Usage: .venv/bin/python bench/reports_run.py [--minutes 3] [--sessions 24] [--seed 1] [--keep]
The last line is `reports=N per_target_ok=… counts_ok=… links_ok=… schema_ok=…`;
exit 1 on any finding.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from watcher.core.reportview import LISTED_PER_SECTION, window_text
from watcher.testing.sim import FactorySimulator
from watcher.testing.sinks import FakeSlack, ReceivedWebhook, SlackPost, WebhookReceiver

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "webhook-event.schema.json").read_text(encoding="utf-8"))
API_KEY = "fk-reports-bench-0123456789"
SLACK_TOKEN = "xoxb-reports-bench-token"
CHANNEL = "C0REPORTS"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"reports-bench-webhook-secret-0123").decode()
SESSION_URL = "https://app.example.test/sessions/{id}"
PREFIX = "report:minutely:"
KINDS = ("started", "finished", "interrupted", "completed", "archived", "deleted")
STORED_KINDS = ("completed", "archived", "deleted")  # one stored event each, of that name

CONFIG = """\
factory:
  base_url: {api}
  api_key: ${{BENCH_API_KEY}}
  timeout: 2s
  session_url: {session_url}
  max_requests_per_second: 500  # every session polled every 500 ms: no step is missed
poll:
  interval: 500ms
  jitter: 10%
state:
  path: {state}
sessions:
{sessions}
targets:
  ci:
    type: webhook
    url: {receiver}/factory
    secret: ${{BENCH_WEBHOOK_SECRET}}
    allow_http: true
  team-slack:
    type: slack
    token: ${{BENCH_SLACK_TOKEN}}
    channel: {channel}
    api_url: {slack}/api/
reports:
  - name: minutely
    schedule: "* * * * *"
    notify: [ci, team-slack]
"""


@dataclass
class Ledger:
    """What the driver did to each session, per report kind (the ground truth)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def note(self, session_id: str, kind: str) -> None:
        """One `kind` happened to `session_id`."""
        with self.lock:
            self.done[session_id][kind] += 1

    def totals(self) -> Counter[str]:
        """Each kind over every session."""
        with self.lock:
            total: Counter[str] = Counter()
            for counts in self.done.values():
                total.update(counts)
            return total


class Day:
    """A working day of sessions, compressed into `span` seconds, played on the simulator."""

    STEP = 2.5  # seconds between two steps of one session: five poll intervals

    def __init__(
        self, sim: FactorySimulator, ids: list[str], ledger: Ledger, rng: random.Random, span: float
    ) -> None:
        self.sim = sim
        self.ids = ids
        self.ledger = ledger
        self.rng = rng
        self.span = span
        self.stop = threading.Event()

    def create(self) -> None:
        """Every session of the day, idle, before the daemon starts (each a started one)."""
        for sid in self.ids:
            self.sim.add_session(sid, title=f"Task {sid}", status="idle", message_count=1)
            self.ledger.note(sid, "started")

    def plan(self) -> list[tuple[float, str, str]]:
        """(second, session, step): sessions begin through the morning and work until the end."""
        steps: list[tuple[float, str, str]] = []
        for n, sid in enumerate(self.ids):
            at = self.span * n / (2 * len(self.ids))
            state = "idle"
            while at <= self.span:
                if state == "running":
                    step = self.rng.choices(("finish", "interrupt"), (4, 1))[0]
                    state = "idle"
                else:
                    step = self.rng.choices(("start", "archive", "delete"), (8, 1, 1))[0]
                    state = {"start": "running", "archive": "done", "delete": "done"}[step]
                steps.append((at, sid, step))
                if state == "done":
                    break
                at += self.STEP + self.rng.random() * 12
        return sorted(steps)

    def play(self) -> None:
        """Run the plan on the wall clock; each step noted in the ledger."""
        begin = time.monotonic()
        for at, sid, step in self.plan():
            if self.stop.wait(max(0.0, begin + at - time.monotonic())):
                return
            self.do(sid, step)

    def do(self, sid: str, step: str) -> None:
        """One step on the simulator, and what the reports must count for it."""
        sim, note = self.sim, self.ledger.note
        if step == "finish":
            sim.complete_run(sid)
            note(sid, "finished")
            note(sid, "completed")
        elif step == "interrupt":
            sim.interrupt(sid)
            note(sid, "interrupted")
        elif step == "start":
            sim.start_run(sid)
            note(sid, "started")
        elif step == "archive":
            sim.archive(sid)
            note(sid, "archived")
        elif step == "delete":
            sim.delete(sid)
            note(sid, "deleted")


@dataclass
class Findings:
    """What the run found, by check."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, check: str, problem: str) -> None:
        """A problem found by `check`."""
        self.problems[check].append(problem)

    def ok(self, check: str) -> bool:
        """Whether `check` found nothing."""
        return not self.problems.get(check)


def minute(epoch: float) -> datetime:
    """The minute boundary at or before `epoch`, aware UTC."""
    return datetime.fromtimestamp(math.floor(epoch / 60) * 60, tz=UTC)


def reports_of(receiver: WebhookReceiver) -> list[ReceivedWebhook]:
    """Every report webhook accepted, in arrival order."""
    return [
        r
        for r in receiver.requests
        if r.status < 300 and isinstance(r.json, dict) and r.json.get("type") == "report"
    ]


def named(data: dict[str, Any]) -> dict[str, str | None]:
    """Every session a report's data names, with the link it gives it."""
    links: dict[str, str | None] = {}
    for items in (data.get("sessions") or {}).values():
        for item in items:
            links[item["id"]] = item.get("url")
    for item in data.get("top_credits") or []:
        links[item["session"]["id"]] = item["session"].get("url")
    for item in data.get("longest_runs") or []:
        links[item["session"]["id"]] = item["session"].get("url")
    return links


def window_events(db: sqlite3.Connection, start: str, end: str) -> dict[str, Counter[str]]:
    """Per kind, how many events each session had recorded in (start, end]."""
    begin = datetime.fromisoformat(start).timestamp()
    stop = datetime.fromisoformat(end).timestamp()
    types = {f"session.{kind}": kind for kind in STORED_KINDS}
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for sid, kind in db.execute(
        "SELECT session_id, type FROM events WHERE recorded_at > ? AND recorded_at <= ?"
        " AND session_id IS NOT NULL",
        (begin, stop),
    ):
        if kind in types:
            found[types[kind]][sid] += 1
    return found


def check_bodies(receiver: WebhookReceiver, findings: Findings) -> None:
    """Every webhook body is valid against the published schema, and signed."""
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for r in receiver.requests:
        if r.json is None:
            findings.add("schema", f"a body that is not JSON: {r.body[:80]!r}")
            continue
        for error in validator.iter_errors(r.json):
            where = "/".join(map(str, error.absolute_path)) or "(body)"
            findings.add("schema", f"{r.json.get('id')}: {where}: {error.message}")
        if not r.signature_valid:
            findings.add("schema", f"{r.json.get('id')}: signature not valid")


def check_per_target(
    hooks: list[ReceivedWebhook], posts: list[SlackPost], findings: Findings
) -> int:
    """One report per minute at each target, no gap, none twice; the minutes seen."""
    ids = [r.json["id"] for r in hooks]
    if not ids:
        findings.add("per_target", "no report reached the webhook")
        return 0
    times = sorted(datetime.fromisoformat(i.removeprefix(PREFIX)) for i in set(ids))
    expected, at = [], times[0]
    while at <= times[-1]:
        expected.append(at)
        at += timedelta(minutes=1)
    if times != expected:
        findings.add("per_target", f"webhook: minutes missing {sorted(set(expected) - set(times))}")
    for report_id, n in Counter(ids).items():
        if n != 1:
            findings.add("per_target", f"webhook: {report_id} received {n} times")
    if len(posts) != len(set(ids)):
        findings.add("per_target", f"slack: {len(posts)} report messages for {len(set(ids))} times")
    return len(set(ids))


def check_counts(
    hooks: list[ReceivedWebhook], state: Path, ledger: Ledger, findings: Findings
) -> None:
    """Each report's counts are the history's in its window; all of them, the whole day's."""
    totals: Counter[str] = Counter()
    db = sqlite3.connect(state)
    with closing(db):
        for hook in hooks:
            data = hook.json["data"]
            recorded = window_events(db, data["window"]["start"], data["window"]["end"])
            for kind in KINDS:
                listed = {item["id"]: item["times"] for item in data["sessions"][kind]}
                totals[kind] += sum(listed.values())
                if data["counts"][kind] != len(listed):
                    findings.add("counts", f"{hook.json['id']}: {kind} count != listed sessions")
                if kind in STORED_KINDS and listed != dict(recorded.get(kind, {})):
                    findings.add(
                        "counts",
                        f"{hook.json['id']}: {kind} {listed} but the store recorded"
                        f" {dict(recorded[kind])} in the window",
                    )
    truth = ledger.totals()
    for kind in KINDS:
        if totals[kind] != truth[kind]:
            findings.add(
                "counts", f"{kind}: the reports counted {totals[kind]}, the day had {truth[kind]}"
            )


def check_links(hooks: list[ReceivedWebhook], posts: list[SlackPost], findings: Findings) -> None:
    """Every session a report names is linked, in the webhook data and in the Slack message."""
    for hook in hooks:
        for sid, url in named(hook.json["data"]).items():
            if url != SESSION_URL.replace("{id}", sid):
                findings.add("links", f"{hook.json['id']}: {sid} linked as {url!r}")
    for post in posts:
        text = post.text + json.dumps(list(post.blocks))
        data = next((h.json["data"] for h in hooks if window_text(h.json["data"]) in text), None)
        if data is None:
            findings.add("links", f"slack: a report message matching no webhook: {post.text[:60]}")
            continue
        links = named(data)
        for url in set(re.findall(r"https?://[^|>)\s\"]+", text)):
            if url not in links.values():
                findings.add("links", f"slack: a link to no session the report names: {url}")
        # Each kind's section lists its first sessions, then "… and N more".
        for kind, items in data["sessions"].items():
            for item in items[:LISTED_PER_SECTION]:
                if item["url"] not in text:
                    findings.add("links", f"slack: {kind} {item['id']} listed without its link")


def report_posts(slack: FakeSlack) -> list[SlackPost]:
    """The Slack messages that are reports."""
    return [p for p in slack.messages if "minutely" in p.text]


def run(options: argparse.Namespace) -> int:
    """The whole outside run; the exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="reports-run-"))
    rng = random.Random(options.seed)
    ids = [f"day-{n:02d}" for n in range(options.sessions)]
    findings = Findings()
    ledger = Ledger()
    with ExitStack() as stack:
        sim = stack.enter_context(FactorySimulator(API_KEY))
        receiver = stack.enter_context(WebhookReceiver(WEBHOOK_SECRET))
        slack = stack.enter_context(FakeSlack(SLACK_TOKEN, (CHANNEL,), 0.0, epoch=time.time))
        state = workdir / "state.db"
        config = workdir / "config.yaml"
        span = max(options.minutes * 60 - 70, 30)  # the last steps are reported before the end
        day = Day(sim, ids, ledger, rng, span)
        day.create()
        config.write_text(
            CONFIG.format(
                api=sim.url,
                session_url=SESSION_URL,
                state=state,
                sessions="\n".join(f"  - id: {sid}" for sid in ids),
                receiver=receiver.url,
                channel=CHANNEL,
                slack=slack.url,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        env.update(
            NO_PROXY="127.0.0.1,localhost",
            BENCH_API_KEY=API_KEY,
            BENCH_WEBHOOK_SECRET=WEBHOOK_SECRET,
            BENCH_SLACK_TOKEN=SLACK_TOKEN,
        )
        log = (workdir / "daemon.log").open("ab")
        started = time.time()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(config)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        # The day begins once the daemon has seen every session as it was created: a
        # change before its first poll would not be a change it can see.
        deadline = time.monotonic() + 60
        while any(sim.request_count(sid) < 1 for sid in ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        driver = threading.Thread(target=day.play, name="day", daemon=True)
        driver.start()
        # Run until the report of the first minute boundary after `minutes` is in.
        last = minute(started + options.minutes * 60) + timedelta(minutes=1)
        deadline = last.timestamp() + 30
        while time.time() < deadline and daemon.poll() is None:
            if any(r.json["id"] == f"{PREFIX}{last.isoformat()}" for r in reports_of(receiver)):
                break
            time.sleep(0.2)
        day.stop.set()
        driver.join(5)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        log.close()
        if code != 0:
            findings.add("daemon", f"exit code {code}")
        text = (workdir / "daemon.log").read_text(errors="replace")
        if "Traceback" in text:
            findings.add("daemon", "a traceback in the daemon's log")
        hooks, posts = reports_of(receiver), report_posts(slack)
        check_bodies(receiver, findings)
        count = check_per_target(hooks, posts, findings)
        check_counts(hooks, state, ledger, findings)
        check_links(hooks, posts, findings)
        elapsed = time.time() - started
        truth = ledger.totals()
        print(f"ran {elapsed:.0f}s, {len(ids)} sessions; the day: {dict(sorted(truth.items()))}")
        print(
            f"webhook reports {len(hooks)}, slack report messages {len(posts)},"
            f" webhook bodies {len(receiver.requests)}"
        )
        for check_name, problems in sorted(findings.problems.items()):
            for problem in problems[:10]:
                print(f"  {check_name}: {problem}")
            if len(problems) > 10:
                print(f"  {check_name}: ... and {len(problems) - 10} more")
        print(f"workdir {workdir}")
        checks = ("per_target", "counts", "links", "schema")
        print(
            f"reports={count} "
            + " ".join(f"{c}_ok={'yes' if findings.ok(c) else 'NO'}" for c in checks)
            + ("" if findings.ok("daemon") else " daemon_ok=NO")
        )
    if not options.keep and not findings.problems:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if findings.problems else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
