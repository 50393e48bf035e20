"""SIGKILL crash harness: `factory-watcher run` must never lose a notification.

The harness runs the real daemon (`python -m watcher run -c CONFIG`) as a
subprocess against the simulator and two local sinks that live in this
process: a `WebhookReceiver` (target `ci`, signed, so every request carries
`webhook-id` = event id) and a `FakeSlackWebhook` (target `ops`). A storm
thread moves sessions through one-way scripts while the daemon is killed
over and over:

* about half the runs get SIGKILL at a random moment, 0.2-1.5 s after spawn;
* the others are armed with one named failpoint (`watcher.ops.failpoint`), in
  rotation `after_outbox_commit`, `after_send`, `during_reload`, and kill
  themselves there; `during_reload` fires on SIGHUP, so those runs get
  SIGHUPs until they die. A run whose point is not reached in time is killed
  by the harness and counted as `<point>_missed`.

Then one clean run (no failpoints) drains everything and is stopped with
SIGTERM, which must exit 0.

"Lost" is judged from what the sinks received against facts that every
watcher must be able to see from the sessions' final states, whatever it
missed while it was down:

* each non-deleted session: `session.completed` whose `data.completed_at`
  is the session's final `completedAt`, and `session.archived`;
* each deleted session: `session.deleted`;
* sessions named `slk-*` also owe their final `archived`/`deleted` to Slack.

Two rules make those facts observable. A session's script starts only after
its `session.discovered` webhook arrived (so the watcher holds a baseline
snapshot from before the first change: a first sighting yields only
`discovered`), and a session is deleted only after that too (a 404 for a
session never recorded says nothing). The daemon's SQLite store is then
cross-checked: integrity, no pending or dead rows, every delivered row
received by its sink, every received event known to the store.

A duplicate is a second receipt of the same `webhook-id` (or Slack
session+kind). It is legitimate only as a send in flight at a kill: no key
twice within one run, never after a clean stop, at most one per lane per
killed run.

Usage: .venv/bin/python bench/crash.py [--kills 200] [--sessions 8] [--seed 1] [--keep]
The last line printed is exactly `lost=L duplicates=D runs=R`; exit 1 on any
loss or inconsistency.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from watcher.ops.failpoint import ENV_VAR as FAILPOINT_ENV
from watcher.ops.failpoint import Failpoint
from watcher.testing.sim import FactorySimulator
from watcher.testing.sinks import (
    FakeSlackWebhook,
    ReceivedWebhook,
    SlackWebhookPost,
    WebhookReceiver,
)

DISCOVERED: Final = "session.discovered"
COMPLETED: Final = "session.completed"
ARCHIVED: Final = "session.archived"
DELETED: Final = "session.deleted"
SLACK_PREFIX: Final = "slk-"
PLAIN_PREFIX: Final = "ses-"

# The chance per pass of each point: high enough that an armed run dies within a second
# or two of work, low enough that it usually gets some work done first.
FAILPOINT_ODDS: Final[Mapping[Failpoint, float]] = {
    Failpoint.AFTER_OUTBOX_COMMIT: 0.2,
    Failpoint.AFTER_SEND: 0.1,
    Failpoint.DURING_RELOAD: 0.5,
}
ROTATION: Final = (Failpoint.AFTER_OUTBOX_COMMIT, Failpoint.AFTER_SEND, Failpoint.DURING_RELOAD)
RANDOM_KILL_WINDOW: Final = (0.2, 1.5)  # seconds after the daemon logged "watching"
# A quarter of the random kills strike while the daemon imports and opens its store.
STARTUP_SHARE: Final = 0.25
STARTUP_KILL_WINDOW: Final = (0.05, 1.0)  # seconds after spawn
STARTUP_PATIENCE_S: Final = 20.0
FAILPOINT_PATIENCE_S: Final = 6.0
RELOAD_PATIENCE_S: Final = 3.0
HUP_PERIOD_S: Final = 0.25
RELOAD_KILL_WINDOW_S: Final = 0.03  # a reload re-reads and validates the file in ~10-30 ms
STOP_TIMEOUT_S: Final = 20.0
CHECK_PERIOD_S: Final = 0.01
POLL_INTERVAL: Final = "150ms"
SLACK_PACE_S: Final = 1.0  # slack_webhook targets send at most one message per second
SESSION_DWELL_S: Final = 0.35  # mean time between two steps of a session's script
MAX_DWELL_S: Final = 2.0

_SLACK_HEADLINE = re.compile(r":(?:file_cabinet|wastebasket): (?P<session>\S+) was (?P<kind>\w+)")
_SLACK_RUN = re.compile(r"/run(?P<run>[0-9]+)$")
# Each daemon process gets its own run number through its environment, which the
# config turns into a webhook header and the Slack webhook URL: a receipt names its
# sender exactly, however late a killed process's last request is handled.
RUN_HEADER: Final = "X-Crash-Run"


# --- the functional core: scripts, kill plans, expected facts, verdicts -------------------


class Step(StrEnum):
    """One move of a session's script, applied to the simulator."""

    START = "start"
    MESSAGES = "messages"
    COMPLETE = "complete"
    INTERRUPT = "interrupt"
    ARCHIVE = "archive"
    DELETE = "delete"


def make_script(rng: random.Random) -> tuple[Step, ...]:
    """A one-way lifecycle: a run, maybe a second (completed or interrupted), then the end.

    Every script completes at least once and ends archived, deleted, or both.
    """
    steps = [Step.START, *[Step.MESSAGES] * rng.randint(0, 3), Step.COMPLETE]
    if rng.random() < 0.5:
        ending = Step.INTERRUPT if rng.random() < 0.3 else Step.COMPLETE
        steps += [Step.START, *[Step.MESSAGES] * rng.randint(0, 2), ending]
    roll = rng.random()
    if roll < 0.2:
        steps.append(Step.DELETE)
    elif roll < 0.35:
        steps += [Step.ARCHIVE, Step.DELETE]
    else:
        steps.append(Step.ARCHIVE)
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class KillPlan:
    """How one daemon run ends.

    `failpoint` None: SIGKILL from the harness `deadline_s` after the daemon logged
    that it is watching, or after spawn when `in_startup`. Otherwise the run is armed
    with that point and gets `deadline_s` from spawn to reach it. `hup_at_s`: one
    extra SIGHUP that long after the kill clock started (reloads under a random kill).
    """

    failpoint: Failpoint | None
    deadline_s: float
    hup_at_s: float | None = None
    in_startup: bool = False

    @property
    def kind(self) -> str:
        """The name the figures use for a run killed as planned."""
        if self.failpoint is not None:
            return str(self.failpoint)
        return "random_startup" if self.in_startup else "random"


def plan_kills(rng: random.Random, count: int) -> list[KillPlan]:
    """About half random moments, the rest armed runs rotating through the three points."""
    plans: list[KillPlan] = []
    armed = 0
    for _ in range(count):
        if rng.random() < 0.5:
            if rng.random() < STARTUP_SHARE:
                plans.append(KillPlan(None, rng.uniform(*STARTUP_KILL_WINDOW), in_startup=True))
                continue
            delay = rng.uniform(*RANDOM_KILL_WINDOW)
            hup = rng.uniform(0.0, delay) if rng.random() < 0.3 else None
            plans.append(KillPlan(None, delay, hup))
        else:
            point = ROTATION[armed % len(ROTATION)]
            armed += 1
            patience = (
                RELOAD_PATIENCE_S if point is Failpoint.DURING_RELOAD else FAILPOINT_PATIENCE_S
            )
            plans.append(KillPlan(point, patience))
    return plans


class Channel(StrEnum):
    """Where a notification is received."""

    WEBHOOK = "webhook"
    SLACK = "slack"


@dataclass(frozen=True, slots=True, order=True)
class Fact:
    """A notification a sink must have received; `completed_at_ms` only for completions."""

    channel: Channel
    session_id: str
    type: str
    completed_at_ms: int | None = None

    def __str__(self) -> str:
        extra = "" if self.completed_at_ms is None else f" completed_at={self.completed_at_ms}"
        return f"{self.channel} {self.type} {self.session_id}{extra}"


@dataclass(frozen=True, slots=True)
class FinalState:
    """What the simulator holds for a session once the storm is over."""

    session_id: str
    deleted: bool
    archived: bool
    completed_at_ms: int | None

    @property
    def to_slack(self) -> bool:
        """Whether the Slack rule (`slk-*`) routes its archived/deleted events."""
        return self.session_id.startswith(SLACK_PREFIX)


def expected_facts(finals: Iterable[FinalState]) -> frozenset[Fact]:
    """The notifications guaranteed observable from final states.

    Precondition (kept by the storm): each session was recorded by the watcher
    before its first change and before its deletion.
    """
    facts: set[Fact] = set()
    for final in finals:
        owed: list[tuple[str, int | None]] = []
        if final.deleted:
            owed.append((DELETED, None))
        else:
            if final.completed_at_ms is not None:
                owed.append((COMPLETED, final.completed_at_ms))
            if final.archived:
                owed.append((ARCHIVED, None))
        for kind, completed_at in owed:
            facts.add(Fact(Channel.WEBHOOK, final.session_id, kind, completed_at))
            if final.to_slack and kind != COMPLETED:
                facts.add(Fact(Channel.SLACK, final.session_id, kind))
    return frozenset(facts)


@dataclass(frozen=True, slots=True)
class Receipt:
    """One notification a sink accepted; `key` identifies the notification across resends.

    The webhook key is `webhook-id` (the event id); Slack carries no id, so its key is
    session and kind (each session is archived and deleted at most once).
    """

    channel: Channel
    key: str
    session_id: str
    type: str
    run: int  # the daemon process that sent it, from its per-process header or URL
    completed_at_ms: int | None = None

    @property
    def fact(self) -> Fact:
        """The fact this receipt proves."""
        return Fact(self.channel, self.session_id, self.type, self.completed_at_ms)


def iso_to_ms(text: str) -> int:
    """An ISO 8601 instant as Unix milliseconds (the webhook's `data.completed_at`)."""
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def webhook_receipt(payload: Any, headers: Mapping[str, str]) -> Receipt | None:
    """The receipt for one webhook (lower-cased headers), or None if it is not ours."""
    run = headers.get(RUN_HEADER.lower(), "")
    if not isinstance(payload, dict) or not isinstance(payload.get("session"), dict):
        return None
    if not run.isdigit() or "webhook-id" not in headers:
        return None
    kind = str(payload.get("type"))
    data = payload.get("data") or {}
    completed = data.get("completed_at") if kind == COMPLETED else None
    return Receipt(
        Channel.WEBHOOK,
        headers["webhook-id"],
        str(payload["session"].get("id")),
        kind,
        int(run),
        None if completed is None else iso_to_ms(str(completed)),
    )


def slack_receipt(text: str, path: str) -> Receipt | None:
    """The receipt for one Slack webhook post (`:wastebasket: ID was deleted`), or None.

    The run that sent it is the last segment of the URL path (`.../run17`).
    """
    match = _SLACK_HEADLINE.fullmatch(text.strip())
    run = _SLACK_RUN.search(path)
    if match is None or run is None:
        return None
    kind = f"session.{match['kind']}"
    return Receipt(
        Channel.SLACK, f"{match['session']}:{kind}", match["session"], kind, int(run["run"])
    )


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One daemon process: its run number, whether it ended by SIGKILL, and how."""

    index: int
    killed: bool
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the sinks' receipts compare with the facts owed."""

    expected: int
    delivered: int
    lost: tuple[Fact, ...]
    duplicates: int
    unexplained: tuple[str, ...]
    resent_from: Mapping[int, int] = field(default_factory=dict)  # run -> keys sent again


def judge(
    expected: Iterable[Fact], receipts: Sequence[Receipt], runs: Sequence[RunRecord]
) -> Verdict:
    """Count lost facts and duplicate receipts, and flag duplicates a kill cannot explain.

    A target sends one row of each session at a time (the outbox's lanes), and the
    webhook target, unpaced, sends rows of different sessions together; the Slack
    webhook, paced, sends one row at a time. So a SIGKILL leaves at most one send per
    session in flight at the webhook and one in all at Slack: a key received in run r
    and again later needs run r to have been killed, and each killed run may account
    for one such key per webhook session and one per Slack. The same key twice within
    one run is never legitimate.
    """
    owed = frozenset(expected)
    proven = {r.fact for r in receipts}
    lost = tuple(sorted(owed - proven))
    killed = {r.index for r in runs if r.killed}
    runs_by_key: dict[tuple[Channel, str], list[int]] = defaultdict(list)
    lane_of: dict[tuple[Channel, str], str] = {}
    for receipt in receipts:
        runs_by_key[(receipt.channel, receipt.key)].append(receipt.run)
        # The webhook sends different sessions' rows together; Slack one row at a time.
        lane_of[(receipt.channel, receipt.key)] = (
            receipt.session_id if receipt.channel is Channel.WEBHOOK else ""
        )
    duplicates = sum(len(found) - 1 for found in runs_by_key.values())
    unexplained: list[str] = []
    resent: Counter[tuple[Channel, int]] = Counter()
    resent_per_lane: Counter[tuple[Channel, int, str]] = Counter()
    for (channel, key), found in sorted(runs_by_key.items()):
        ordered = sorted(found)
        if len(set(ordered)) != len(ordered):
            unexplained.append(f"{channel} {key}: received twice in one run ({ordered})")
            continue
        for earlier in ordered[:-1]:
            if earlier not in killed:
                unexplained.append(f"{channel} {key}: sent again after clean run {earlier}")
            resent[(channel, earlier)] += 1
            resent_per_lane[(channel, earlier, lane_of[(channel, key)])] += 1
    for (channel, run, lane), count in sorted(resent_per_lane.items()):
        if count > 1:
            where = f"session {lane}" if lane else "the target"
            unexplained.append(
                f"run {run}: {count} {channel} keys of {where} sent again; a killed run has"
                " at most one send in flight per lane"
            )
    return Verdict(
        expected=len(owed),
        delivered=len(owed & proven),
        lost=lost,
        duplicates=duplicates,
        unexplained=tuple(unexplained),
        resent_from=dict(Counter(run for _, run in resent.elements())),
    )


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One row of the daemon's outbox, joined with its event."""

    row_id: int
    event_id: str
    target: str
    status: str
    session_id: str
    type: str
    last_error: str | None = None


def check_store(
    rows: Sequence[OutboxRecord], event_ids: frozenset[str], receipts: Sequence[Receipt]
) -> list[str]:
    """Cross-check the daemon's bookkeeping with the sinks; returns the problems found.

    Every row must be delivered; a delivered row must have reached its sink at least
    once; every event a sink received must exist in the store.
    """
    webhook_keys = {r.key for r in receipts if r.channel is Channel.WEBHOOK}
    slack_keys = {r.key for r in receipts if r.channel is Channel.SLACK}
    problems: list[str] = []
    for row in rows:
        where = f"outbox row {row.row_id} ({row.type} {row.session_id} -> {row.target})"
        if row.status != "delivered":
            problems.append(f"{where} is {row.status}: {row.last_error or 'no error recorded'}")
        elif row.target == "ci" and row.event_id not in webhook_keys:
            problems.append(f"{where} marked delivered, event {row.event_id} never received")
        elif row.target == "ops" and f"{row.session_id}:{row.type}" not in slack_keys:
            problems.append(f"{where} marked delivered, never received by Slack")
    problems.extend(
        f"webhook {key} received but unknown to the store"
        for key in sorted(webhook_keys - event_ids)
    )
    return problems


# --- the imperative shell: sinks, storm, daemon runs ---------------------------------------


class Ledger:
    """Every receipt of both sinks, fed from their request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._receipts: list[Receipt] = []
        self._facts: set[Fact] = set()
        self.problems: list[str] = []
        self.torn = 0

    def on_webhook(self, request: ReceivedWebhook) -> None:
        """`WebhookReceiver` callback."""
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and len(request.body) < int(announced):
            # The sender died mid-request: it never saw an answer, so the row stays
            # pending and nothing was delivered.
            with self._lock:
                self.torn += 1
            return
        receipt = webhook_receipt(request.json, request.headers)
        with self._lock:
            if request.signature_valid is not True:
                self.problems.append(f"webhook with a bad signature: {request.body[:80]!r}")
            if receipt is None:
                self.problems.append(f"webhook not understood: {request.body[:80]!r}")
            elif request.status < 300:
                self._add(receipt)

    def on_slack(self, post: SlackWebhookPost) -> None:
        """`FakeSlackWebhook` callback."""
        text = str(post.payload.get("text") or "")
        receipt = slack_receipt(text, post.path)
        with self._lock:
            if receipt is None:
                self.problems.append(f"Slack post not understood: {text[:80]!r}")
            else:
                self._add(receipt)

    def _add(self, receipt: Receipt) -> None:
        self._receipts.append(receipt)
        self._facts.add(receipt.fact)

    def has(self, facts: Iterable[Fact]) -> bool:
        """Whether every fact has been received."""
        with self._lock:
            return all(f in self._facts for f in facts)

    def discovered(self, session_id: str) -> bool:
        """Whether the watcher announced the session (so it holds a snapshot of it)."""
        return self.has([Fact(Channel.WEBHOOK, session_id, DISCOVERED)])

    def receipts(self) -> list[Receipt]:
        """Every receipt so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._receipts)


CONFIG_TEMPLATE: Final = """\
factory:
  base_url: {api}
  api_key: ${{CRASH_API_KEY}}
  timeout: 2s
poll:
  interval: {interval}
  jitter: 10%
state:
  path: {state}
{sessions}
targets:
  ci:
    type: webhook
    url: {receiver}/factory
    secret: ${{CRASH_WEBHOOK_SECRET}}
    headers: {{{run_header}: "${{CRASH_RUN}}"}}
    allow_http: true
  ops:
    type: slack_webhook
    url: ${{CRASH_SLACK_WEBHOOK_URL}}
rules:
  - name: seen
    on: session.discovered
    notify: ci
  - name: lifecycle
    on: [session.status_changed, session.completed, session.messages_added,
         session.archived, session.deleted]
    notify: ci
  - name: gone
    on: [session.archived, session.deleted]
    when: {{session: ["{slack_prefix}*"]}}
    notify: ops
"""


@dataclass
class ConfigFile:
    """The daemon's config file, rewritten atomically whenever the watched sessions change."""

    path: Path
    api_url: str
    receiver_url: str
    state_path: Path
    version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, session_ids: Sequence[str]) -> None:
        """Replace the file so that a starting or reloading daemon reads old or new, never half."""
        listed = "\n".join(f"  - id: {sid}" for sid in session_ids)
        text = CONFIG_TEMPLATE.format(
            api=self.api_url,
            interval=POLL_INTERVAL,
            state=self.state_path,
            sessions=f"sessions:\n{listed}" if session_ids else "sessions: []",
            receiver=self.receiver_url,
            run_header=RUN_HEADER,
            slack_prefix=SLACK_PREFIX,
        )
        with self._lock:
            scratch = self.path.with_suffix(".tmp")
            scratch.write_text(text)
            scratch.chmod(0o600)
            os.replace(scratch, self.path)
            self.version += 1

    def current_version(self) -> int:
        """Bumped by every write."""
        with self._lock:
            return self.version


@dataclass
class _Live:
    session_id: str
    script: tuple[Step, ...]
    position: int = 0
    due: float | None = None


class Storm:
    """Keeps `active` sessions moving through their scripts, replacing finished ones.

    A session's script starts only once the watcher announced it, and a session
    leaves the config once every fact it owes has been received, which keeps the
    number of polled sessions near `active` however long the storm runs.
    """

    def __init__(
        self,
        sim: FactorySimulator,
        ledger: Ledger,
        config: ConfigFile,
        rng: random.Random,
        active: int,
    ) -> None:
        self._sim = sim
        self._ledger = ledger
        self._config = config
        self._rng = rng
        self._active = active
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._finished: set[str] = set()
        self._watched: list[str] = []
        self._created: list[str] = []
        self._draining = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.failure: str | None = None

    def created(self) -> list[str]:
        """Every session the storm ever created, in order."""
        with self._lock:
            return list(self._created)

    def watched(self) -> list[str]:
        """Sessions in the config right now."""
        with self._lock:
            return list(self._watched)

    def idle(self) -> bool:
        """Draining and every script played to its end."""
        with self._lock:
            return self._draining and not self._live

    def drain(self) -> None:
        """Create no more sessions; let the live ones finish."""
        with self._lock:
            self._draining = True

    def tick(self, now: float) -> None:
        """Advance due sessions, retire paid-up ones, top up; rewrite the config on change."""
        with self._lock:
            changed = self._top_up()
            for live in list(self._live.values()):
                self._advance(live, now)
            changed |= self._retire()
            if changed:
                self._config.write(self._watched)

    def _top_up(self) -> bool:
        changed = False
        while not self._draining and len(self._live) < self._active:
            number = len(self._created) + 1
            prefix = SLACK_PREFIX if self._rng.random() < 0.2 else PLAIN_PREFIX
            session_id = f"{prefix}{number:05d}"
            self._sim.add_session(session_id)
            self._created.append(session_id)
            self._live[session_id] = _Live(session_id, make_script(self._rng))
            self._watched.append(session_id)
            changed = True
        return changed

    def _dwell(self) -> float:
        # Exponential: many steps land between two polls, so the watcher misses
        # intermediate states and must still owe nothing it could not see.
        return min(self._rng.expovariate(1 / SESSION_DWELL_S), MAX_DWELL_S)

    def _advance(self, live: _Live, now: float) -> None:
        if live.due is None:
            if self._ledger.discovered(live.session_id):
                live.due = now + self._dwell()
            return
        if now < live.due:
            return
        self._apply(live.session_id, live.script[live.position])
        self.steps += 1
        live.position += 1
        live.due = now + self._dwell()
        if live.position == len(live.script):
            del self._live[live.session_id]
            self._finished.add(live.session_id)

    def _apply(self, session_id: str, step: Step) -> None:
        sim = self._sim
        match step:
            case Step.START:
                sim.start_run(session_id)
            case Step.MESSAGES:
                sim.add_messages(session_id, self._rng.randint(1, 3))
            case Step.COMPLETE:
                sim.complete_run(session_id)
            case Step.INTERRUPT:
                sim.interrupt(session_id)
            case Step.ARCHIVE:
                sim.archive(session_id)
            case Step.DELETE:
                sim.delete(session_id)

    def _retire(self) -> bool:
        paid = [
            sid
            for sid in self._finished
            if self._ledger.has(expected_facts([final_state(self._sim, sid)]))
        ]
        for sid in paid:
            self._finished.discard(sid)
            self._watched.remove(sid)
        return bool(paid)

    def run_in_thread(self, period_s: float) -> None:
        """Tick every `period_s` seconds in a daemon thread until `close`."""

        def loop() -> None:
            while not self._stop.wait(period_s):
                try:
                    self.tick(time.monotonic())
                except Exception as error:  # reported by the verdict, not lost in a thread
                    self.failure = f"storm thread failed: {error!r}"
                    return

        self._thread = threading.Thread(target=loop, name="Storm", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def final_state(sim: FactorySimulator, session_id: str) -> FinalState:
    """The simulator's current state of a session as a `FinalState`."""
    found = sim.session(session_id)
    return FinalState(
        session_id, found.deleted, found.archived_at is not None, found.completed_at_ms
    )


@dataclass
class Run:
    """One daemon process."""

    index: int
    process: subprocess.Popen[bytes]
    started: float
    log_offset: int
    hupped_version: int
    ready_baseline: int | None = None
    ready: bool = False
    hups: int = 0


@dataclass
class Outcome:
    """Figures of a whole harness run."""

    kills: Counter[str] = field(default_factory=Counter)
    anomalies: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    hups: int = 0
    final_exit: int | None = None
    final_seconds: float = 0.0


class Harness:
    """Spawns, signals and kills daemons while the storm runs, then drains and verifies."""

    def __init__(
        self,
        workdir: Path,
        sim: FactorySimulator,
        ledger: Ledger,
        config: ConfigFile,
        storm: Storm,
        env: Mapping[str, str],
        slack_base: str,
        rng: random.Random,
    ) -> None:
        self.workdir = workdir
        self.sim = sim
        self.ledger = ledger
        self.config = config
        self.storm = storm
        self.env = dict(env)
        self.slack_base = slack_base
        self._rng = rng
        self.log = workdir / "daemon.log"
        self.outcome = Outcome()
        self._run: Run | None = None

    # -- one process --

    def spawn(self, label: str, failpoint: str | None) -> Run:
        """Start `python -m watcher run -c CONFIG`, its output appended to daemon.log."""
        index = len(self.outcome.runs)
        env = {
            **self.env,
            "CRASH_RUN": str(index),
            "CRASH_SLACK_WEBHOOK_URL": f"{self.slack_base}/run{index}",
        }
        if failpoint is not None:
            env[FAILPOINT_ENV] = failpoint
        with self.log.open("ab") as handle:
            handle.write(f"===== run {index}: {label} =====\n".encode())
            handle.flush()
            offset = handle.tell()
            process = subprocess.Popen(
                [sys.executable, "-m", "watcher", "run", "-c", str(self.config.path)],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
            )
        run = Run(index, process, time.monotonic(), offset, self.config.current_version())
        self._run = run
        return run

    def log_since(self, run: Run) -> str:
        """What `run` has logged so far."""
        with self.log.open("rb") as handle:
            handle.seek(run.log_offset)
            return handle.read().decode(errors="replace")

    def _check_ready(self, run: Run) -> bool:
        # Ready = it logged "watching" and a poll reached the simulator afterwards, so
        # its event loop is turning and the SIGHUP receiver is installed: a SIGHUP any
        # earlier would meet the default action and end the process.
        if run.ready:
            return True
        if run.ready_baseline is None:
            if "watching " in self.log_since(run):
                run.ready_baseline = self.sim.total_requests
            return False
        run.ready = self.sim.total_requests > run.ready_baseline
        return run.ready

    def _hup(self, run: Run) -> None:
        run.hupped_version = self.config.current_version()
        run.hups += 1
        self.outcome.hups += 1
        run.process.send_signal(signal.SIGHUP)

    def supervise(
        self, run: Run, until: float, *, hup_at: float | None = None, hup_every: float | None = None
    ) -> int | None:
        """Watch `run` until it exits (its code) or until `until` (None), sending SIGHUPs.

        A ready daemon gets a SIGHUP when the config changed since its last one, and
        at `hup_at` (or as soon as it is ready after that), then every `hup_every` s.
        """
        next_hup = hup_at
        while True:
            code = run.process.poll()
            if code is not None:
                return code
            now = time.monotonic()
            if now >= until:
                return None
            if self._check_ready(run):
                if self.config.current_version() > run.hupped_version:
                    self._hup(run)
                elif next_hup is not None and now >= next_hup:
                    self._hup(run)
                    next_hup = None if hup_every is None else now + hup_every
            # The harness polls conditions (process, log, simulator) on a short period.
            time.sleep(CHECK_PERIOD_S)

    def _finish_killed(self, run: Run, kind: str) -> None:
        self.outcome.kills[kind] += 1
        self.outcome.runs.append(RunRecord(run.index, killed=True, kind=kind))
        self._run = None

    def _anomaly(self, run: Run, what: str) -> None:
        tail = "\n".join(self.log_since(run).splitlines()[-15:])
        self.outcome.anomalies.append(f"run {run.index}: {what}\n{tail}")

    def kill_run(self, plan: KillPlan) -> None:
        """One run of the storm, ended as `plan` says."""
        if plan.failpoint is None:
            self._random_kill(plan)
            return
        point = plan.failpoint
        run = self.spawn(f"armed {point}", f"{point}:{FAILPOINT_ODDS[point]}")
        reloads = point is Failpoint.DURING_RELOAD
        code = self.supervise(
            run,
            run.started + plan.deadline_s,
            hup_at=run.started if reloads else None,
            hup_every=HUP_PERIOD_S if reloads else None,
        )
        if code == -signal.SIGKILL:
            self._finish_killed(run, str(point))
        elif code is None:
            if reloads and run.ready:
                # The point was never reached (or is not wired): kill from outside
                # while a reload is under way instead.
                self._hup(run)
                time.sleep(self._rng.uniform(0.0, RELOAD_KILL_WINDOW_S))
            run.process.kill()
            run.process.wait(STOP_TIMEOUT_S)
            self._finish_killed(run, f"{point}_missed")
        else:
            self._anomaly(run, f"armed with {point}, exited with {code}")
            self._finish_killed(run, "unexpected_exit")

    def _random_kill(self, plan: KillPlan) -> None:
        clock = "spawn" if plan.in_startup else "watching"
        run = self.spawn(f"SIGKILL {plan.deadline_s:.2f}s after {clock}", None)
        code: int | None = None
        base = run.started
        if not plan.in_startup:
            limit = run.started + STARTUP_PATIENCE_S
            while code is None and run.ready_baseline is None and time.monotonic() < limit:
                code = self.supervise(run, time.monotonic() + CHECK_PERIOD_S)
            base = time.monotonic()
        if code is None:
            hup_at = None if plan.hup_at_s is None else base + plan.hup_at_s
            code = self.supervise(run, base + plan.deadline_s, hup_at=hup_at)
        if code is None:
            run.process.kill()
            run.process.wait(STOP_TIMEOUT_S)
            self._finish_killed(run, plan.kind)
            return
        self._anomaly(run, f"exited with {code} before its random kill")
        self._finish_killed(run, "unexpected_exit")

    def pending_rows(self) -> int | None:
        """Outbox rows not delivered yet, read beside the running daemon (None: no DB yet)."""
        path = self.config.state_path
        if not path.exists():
            return None
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
                row = db.execute("SELECT COUNT(*) FROM outbox WHERE status != 'delivered'")
                return int(row.fetchone()[0])
        except sqlite3.OperationalError:
            return None

    def _settled(self, owed: frozenset[Fact]) -> bool:
        return self.storm.idle() and self.ledger.has(owed) and self.pending_rows() == 0

    def clean_run(self, deadline_s: float) -> None:
        """Run without failpoints until every fact arrived and the outbox is empty; SIGTERM."""
        run = self.spawn("clean run, no failpoints", None)
        start = run.started
        deadline = start + deadline_s
        settled = False
        while not settled and time.monotonic() < deadline:
            if self.supervise(run, min(deadline, time.monotonic() + 0.2)) is not None:
                break
            if not self._settled(self.owed()):
                continue
            # Two more polls of every watched session: the first one's commit is done
            # before the second starts, so no transition is left unrecorded.
            # A session retired meanwhile is no longer polled, and owes nothing more.
            counts = {sid: self.sim.request_count(sid) for sid in self.storm.watched()}
            while time.monotonic() < deadline and run.process.poll() is None:
                watched = set(self.storm.watched())
                if all(
                    self.sim.request_count(s) >= n + 2 for s, n in counts.items() if s in watched
                ):
                    break
                self.supervise(run, time.monotonic() + 0.05)
            settled = self._settled(self.owed())
        code = run.process.poll()
        if code is None:
            run.process.send_signal(signal.SIGTERM)
            try:
                code = run.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                run.process.kill()
                code = run.process.wait(STOP_TIMEOUT_S)
                self._anomaly(run, "did not stop within 20 s of SIGTERM")
        if not settled:
            self._anomaly(run, f"not settled after {deadline_s:.0f} s")
        if code != 0:
            self._anomaly(run, f"clean run exited with {code}, expected 0 after SIGTERM")
        self.outcome.final_exit = code
        self.outcome.final_seconds = time.monotonic() - start
        self.outcome.runs.append(RunRecord(run.index, killed=False, kind="clean"))
        self._run = None

    def owed(self) -> frozenset[Fact]:
        """Facts owed by the sessions' current states."""
        return expected_facts(final_state(self.sim, sid) for sid in self.storm.created())

    def abort(self) -> None:
        """Kill the daemon of an interrupted run, if any."""
        if self._run is not None and self._run.process.poll() is None:
            self._run.process.kill()
            self._run.process.wait(STOP_TIMEOUT_S)


def read_store(path: Path) -> tuple[bool, list[OutboxRecord], frozenset[str]]:
    """(integrity ok, outbox rows, event ids) of the daemon's state database."""
    with closing(sqlite3.connect(path, timeout=5)) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = [
            OutboxRecord(*row)
            for row in db.execute(
                "SELECT o.id, o.event_id, o.target, o.status, COALESCE(e.session_id, ''),"
                " e.type, o.last_error FROM outbox o JOIN events e ON e.id = o.event_id"
                " ORDER BY o.id"
            )
        ]
        events = frozenset(r[0] for r in db.execute("SELECT id FROM events"))
    return integrity, rows, events


def daemon_env(api_key: str, webhook_secret: str) -> dict[str, str]:
    """The daemon's environment: ours minus proxies and failpoints, plus the config's secrets."""
    dropped = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", FAILPOINT_ENV}
    env = {k: v for k, v in os.environ.items() if k.upper() not in dropped}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        FACTORY_WATCHER_LOG_LEVEL="INFO",
        CRASH_API_KEY=api_key,
        CRASH_WEBHOOK_SECRET=webhook_secret,
    )
    return env


@dataclass(frozen=True, slots=True)
class Options:
    """Command-line options."""

    kills: int = 200
    sessions: int = 8
    seed: int = 1
    keep: bool = False
    workdir: Path | None = None


def parse_args(argv: Sequence[str] | None) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/crash.py",
        description="SIGKILL factory-watcher over and over; check that nothing is lost.",
    )
    parser.add_argument("--kills", type=int, default=200, help="killed runs (default 200)")
    parser.add_argument(
        "--sessions", type=int, default=8, help="sessions moving at once (default 8)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--workdir", type=Path, help="work in this directory (created, never deleted)"
    )
    args = parser.parse_args(argv)
    if args.kills < 0 or args.sessions < 1:
        parser.error("--kills must be >= 0 and --sessions >= 1")
    return Options(args.kills, args.sessions, args.seed, args.keep, args.workdir)


@dataclass(frozen=True, slots=True)
class Report:
    """The figures printed at the end."""

    lines: tuple[str, ...]
    lost: int
    duplicates: int
    runs: int
    failed: bool

    @property
    def last_line(self) -> str:
        """Exactly `lost=L duplicates=D runs=R`."""
        return f"lost={self.lost} duplicates={self.duplicates} runs={self.runs}"


def verify(harness: Harness, elapsed: float) -> Report:
    """Compare what the sinks received with what was owed, and the store with both."""
    outcome = harness.outcome
    receipts = harness.ledger.receipts()
    verdict = judge(harness.owed(), receipts, outcome.runs)
    integrity, rows, events = read_store(harness.config.state_path)
    problems = [
        *check_store(rows, events, receipts),
        *harness.ledger.problems,
        *verdict.unexplained,
        *([harness.storm.failure] if harness.storm.failure else []),
    ]
    if not integrity:
        problems.insert(0, "PRAGMA integrity_check is not ok")
    finals = [final_state(harness.sim, sid) for sid in harness.storm.created()]
    status = Counter(r.status for r in rows)
    by_channel = Counter(r.channel for r in receipts)
    kinds = {r.index: r.kind for r in outcome.runs}
    resent_by_kind: Counter[str] = Counter()
    for run, count in verdict.resent_from.items():
        resent_by_kind[kinds.get(run, "?")] += count
    lines = [
        "kills: "
        + " ".join(f"{kind}={n}" for kind, n in sorted(outcome.kills.items()))
        + f" (total {sum(outcome.kills.values())}); SIGHUPs sent: {outcome.hups}",
        f"sessions: created={len(finals)} deleted={sum(f.deleted for f in finals)}"
        f" archived={sum(f.archived and not f.deleted for f in finals)}"
        f" script steps={harness.storm.steps}",
        f"notifications: expected={verdict.expected} delivered={verdict.delivered}"
        f" receipts webhook={by_channel[Channel.WEBHOOK]} slack={by_channel[Channel.SLACK]}"
        f" torn={harness.ledger.torn}",
        "duplicates by how the sending run ended: "
        + (" ".join(f"{k}={n}" for k, n in sorted(resent_by_kind.items())) or "none"),
        f"store: events={len(events)} outbox={len(rows)} "
        + " ".join(f"{s}={n}" for s, n in sorted(status.items()))
        + f" integrity={'ok' if integrity else 'FAILED'}",
        f"clean run: exit {outcome.final_exit} after {outcome.final_seconds:.1f} s",
        f"elapsed: {elapsed:.1f} s",
    ]
    lines += [f"LOST: {fact}" for fact in verdict.lost]
    lines += [f"PROBLEM: {p}" for p in problems]
    lines += [f"ANOMALY: {a}" for a in outcome.anomalies]
    failed = bool(verdict.lost or problems or outcome.anomalies)
    return Report(tuple(lines), len(verdict.lost), verdict.duplicates, len(outcome.runs), failed)


@dataclass
class _Workdir:
    path: Path
    remove: bool


def _workdir(options: Options) -> _Workdir:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        return _Workdir(options.workdir, remove=False)
    return _Workdir(Path(tempfile.mkdtemp(prefix="fw-crash-")), remove=not options.keep)


def storm_and_verify(options: Options, workdir: Path) -> Report:
    """Set everything up, run the kills and the clean run, and judge."""
    began = time.monotonic()
    rng = random.Random(options.seed)
    api_key = f"fk-crash-{secrets.token_hex(8)}"
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    ledger = Ledger()
    with ExitStack() as stack:
        sim = stack.enter_context(FactorySimulator(api_key))
        receiver = stack.enter_context(
            WebhookReceiver(webhook_secret, on_message=ledger.on_webhook)
        )
        slack = stack.enter_context(FakeSlackWebhook(on_message=ledger.on_slack))
        config = ConfigFile(workdir / "config.yaml", sim.url, receiver.url, workdir / "state.db")
        storm = Storm(sim, ledger, config, random.Random(rng.random()), options.sessions)
        storm.tick(time.monotonic())
        storm.run_in_thread(0.02)
        stack.callback(storm.close)
        harness = Harness(
            workdir,
            sim,
            ledger,
            config,
            storm,
            daemon_env(api_key, webhook_secret),
            slack_base=f"{slack.url}/services/T000/B000",
            rng=random.Random(rng.random()),
        )
        stack.callback(harness.abort)
        plans = plan_kills(rng, options.kills)
        for number, plan in enumerate(plans, start=1):
            harness.kill_run(plan)
            if number % 25 == 0 or number == len(plans):
                kills = " ".join(f"{k}={n}" for k, n in sorted(harness.outcome.kills.items()))
                print(
                    f"[{time.monotonic() - began:6.1f}s] {number}/{len(plans)} kills: {kills};"
                    f" sessions {len(storm.created())}",
                    flush=True,
                )
        storm.drain()
        owed_slack = [f for f in harness.owed() if f.channel is Channel.SLACK]
        outstanding = sum(1 for f in owed_slack if not ledger.has([f])) + options.sessions
        harness.clean_run(deadline_s=60.0 + 2 * SLACK_PACE_S * outstanding)
        storm.close()
        return verify(harness, time.monotonic() - began)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; exit 0 when nothing was lost and the store is consistent."""
    options = parse_args(argv)
    workdir = _workdir(options)
    print(
        f"crash harness: kills={options.kills} sessions={options.sessions} seed={options.seed}"
        f" workdir={workdir.path}",
        flush=True,
    )
    try:
        report = storm_and_verify(options, workdir.path)
    except BaseException:
        print(f"harness interrupted; work directory kept: {workdir.path}", file=sys.stderr)
        raise
    for line in report.lines:
        print(line)
    if report.failed and workdir.remove:
        print(f"work directory kept for inspection: {workdir.path}")
    elif workdir.remove:
        shutil.rmtree(workdir.path, ignore_errors=True)
    print(report.last_line, flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
