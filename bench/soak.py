"""`make soak`: the real daemon under heavy session churn; are its figures flat over time?

Everything runs on 127.0.0.1, each part in its own process:

- the simulator (`python -m watcher.testing.sim`), driven through its `/_sim/`
  control routes by this harness: `--churn` new sessions a minute, each
  created, started, finished (some run twice, some are interrupted, some stay
  running until they are stuck, some are deleted while watched), then aged out
  of discovery by `discover.created_within` and finally deleted from the
  simulator, so that its list stays as long as a busy organisation's recent
  list;
- a `WebhookReceiver` (`watcher/testing/sinks.py`) in its own process, the
  target of rules on started, finished, interrupted, stuck and deleted;
- the daemon: `python -m watcher run -c <generated config>`, the production
  command, discovering sessions (`discover:` with `created_within` and
  `max_sessions`), with retention shortened to minutes
  (`state: {keep_delivered, keep_dead, forget_sessions_after}`) when the
  build accepts those keys (`factory-watcher check` says), and its `/metrics`
  on a loopback port.

At 60 sessions a minute an hour of run creates 3,600 sessions and sends
several notifications for each: weeks of a busy organisation.

Every `--sample` seconds it prints one row: RSS and open descriptors
(/proc/PID), database size (+ WAL), rows per table (a read-only connection),
housekeeping time per round and CPU per poll over the sample (from
`/metrics`), sessions watched, notifications sent. At the end it fits a line
to each figure over the second half of the run (after warm-up) and judges
its growth: under 10% is `ok`, else `missed`.

    python bench/soak.py [--minutes 60] [--sample 60] [--churn 60] [--retention 2]

Exit status: 0 when every figure is flat, 1 when one grew, 2 when the run
itself failed (a process died, an answer never came, Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python bench/soak.py`: bench.common is under the root

from bench.common import (  # noqa: E402
    BenchError,
    Child,
    Daemon,
    Stopped,
    config_accepted,
    free_port,
    parse_metrics,
    proc_cpu,
    proc_rss_mib,
)

PY = sys.executable
API_KEY = "fk-soak-key-0000"
TARGET_GROWTH = 0.10  # "flat": under 10% over the second half of the run
MAX_ACTIONS_PER_TICK = 500  # the churn catches up in bounded steps
CONTROL_FAILURES_ALLOWED = 20  # consecutive failed control calls end the run
RETENTION_KEYS = ("keep_delivered", "keep_dead", "forget_sessions_after")


class SoakError(BenchError):
    """The soak itself could not run (a process did not start or died, a wait timed out)."""


# --- pure helpers: metrics text, the line fit, the judgement -----------------------------


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares `(intercept, slope)` of `y = a + b * x`; slope 0 for one distinct x."""
    count = len(points)
    if count == 0:
        raise ValueError("no points to fit")
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


class Verdict(StrEnum):
    """How one figure did over the second half of the run."""

    OK = "ok"
    MISSED = "missed"
    NOT_MEASURED = "not measured"


@dataclass(frozen=True, slots=True)
class Growth:
    """One figure over the second half: first and last sample, fitted slope and growth."""

    figure: str
    first: float
    last: float
    slope_per_min: float
    growth: float  # fitted end - fitted start, over max(fitted start, floor)
    verdict: Verdict


def judge_growth(
    figure: str,
    points: Sequence[tuple[float, float]],
    floor: float,
    target: float = TARGET_GROWTH,
) -> Growth:
    """Fit a line to `(minute, value)` points and judge its growth against `target`.

    The growth is the fitted rise from the first to the last minute, relative
    to the fitted start or to `floor`, whichever is larger: a noise floor, so
    that a table going from 1 row to 3 or a figure near zero is not a 200%
    growth. Fewer than three measured points cannot be judged.
    """
    measured = [(x, y) for x, y in points if not math.isnan(y)]
    if len(measured) < 3:
        nan = math.nan
        return Growth(figure, nan, nan, nan, nan, Verdict.NOT_MEASURED)
    intercept, slope = fit_line(measured)
    start_x, end_x = measured[0][0], measured[-1][0]
    fitted_start = intercept + slope * start_x
    rise = slope * (end_x - start_x)
    growth = rise / max(abs(fitted_start), floor)
    verdict = Verdict.OK if growth < target else Verdict.MISSED
    return Growth(figure, measured[0][1], measured[-1][1], slope, growth, verdict)


def second_half(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points from half the run's last x on: what is left after warm-up."""
    if not points:
        return []
    half = points[-1][0] / 2
    return [(x, y) for x, y in points if x >= half]


# --- the churn: what happens to each session, when --------------------------------------


class Action(StrEnum):
    """A control call the harness makes on the simulator."""

    CREATE = "create"
    START = "start"
    COMPLETE = "complete"
    INTERRUPT = "interrupt"
    DELETE = "delete"


@dataclass(frozen=True, slots=True, order=True)
class Planned:
    """One control call due at `at` (harness monotonic seconds)."""

    at: float
    session_id: str = field(compare=False)
    action: Action = field(compare=False)


def plan_session(
    session_id: str, created: float, age_out: float, rng: random.Random
) -> list[Planned]:
    """Everything that happens to one session, from its creation on.

    Starts wait for the discovery sweep (10 s) so that the start is seen as a
    change. 70% finish one run (half of those run a second time), 10% are
    interrupted, 10% stay running until they age out (a stuck session), 10%
    are deleted while watched. Every session is deleted from the simulator a
    minute after it aged out of discovery, so the list stays short.
    """
    at = created + rng.uniform(12, 20)
    plan = [Planned(created, session_id, Action.CREATE), Planned(at, session_id, Action.START)]
    at += rng.uniform(10, 25)
    fate = rng.random()
    deleted_early = False
    if fate < 0.7:
        plan.append(Planned(at, session_id, Action.COMPLETE))
        if rng.random() < 0.5:
            at += rng.uniform(8, 15)
            plan.append(Planned(at, session_id, Action.START))
            at += rng.uniform(10, 20)
            plan.append(Planned(at, session_id, Action.COMPLETE))
    elif fate < 0.8:
        plan.append(Planned(at, session_id, Action.INTERRUPT))
    elif fate < 0.9:
        pass  # stays running: the stuck rule fires while it is watched
    else:
        at += rng.uniform(10, 30)
        plan.append(Planned(at, session_id, Action.DELETE))
        deleted_early = True
    if not deleted_early:
        plan.append(Planned(created + age_out + 60, session_id, Action.DELETE))
    return plan


# --- processes ---------------------------------------------------------------------------


def proc_fds(pid: int) -> int:
    """Open file descriptors of a process (/proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Simulator(Child):
    """`python -m watcher.testing.sim` and its `/_sim/` control routes."""

    def __init__(self) -> None:
        cmd = [PY, "-m", "watcher.testing.sim", "--port", "0", "--sessions", "0"]
        super().__init__([*cmd, "--api-key", API_KEY], "simulator")
        self.http = httpx.Client(base_url=self.url, timeout=5, trust_env=False)

    def act(self, planned: Planned) -> bool:
        """Make one control call; False when the session is already gone (404)."""
        sid = planned.session_id
        match planned.action:
            case Action.CREATE:
                body = {"session_id": sid, "title": f"soak {sid}", "model": "soak-model"}
                response = self.http.post("/_sim/sessions", json=body)
            case Action.DELETE:
                response = self.http.delete(f"/_sim/sessions/{sid}")
            case _:
                response = self.http.post(f"/_sim/sessions/{sid}/{planned.action}")
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def stop(self) -> None:
        with contextlib.suppress(AttributeError):
            self.http.close()
        super().stop()


class Receiver(Child):
    """A `WebhookReceiver` in its own process (`--serve-sink`); counts receipts by type."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self._lock = threading.Lock()
        super().__init__([PY, str(Path(__file__).resolve()), "--serve-sink"], "webhook receiver")

    def on_line(self, line: str) -> None:
        with self._lock:
            self.received[line.strip()] += 1

    def counts(self) -> Counter[str]:
        """Webhooks received so far, by event type (a copy)."""
        with self._lock:
            return Counter(self.received)


def serve_sink() -> int:
    """The receiver process: print the URL, then each webhook's event type, until SIGTERM."""
    from watcher.testing.sinks import ReceivedWebhook, WebhookReceiver

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()

    def on_message(message: ReceivedWebhook) -> None:
        body = message.json if isinstance(message.json, dict) else {}
        with lock:
            print(body.get("type", "?"), flush=True)

    with WebhookReceiver(on_message=on_message) as receiver:
        print(f"listening on {receiver.url}", flush=True)
        stop.wait()
    return 0


# --- the config --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What the run is asked to do."""

    minutes: float
    sample: float
    churn: float  # sessions created per minute
    retention: float  # minutes; keep_delivered = keep_dead, forget after one more
    created_within: float  # minutes
    workdir: Path
    seed: int


def retention_lines(plan: Plan) -> list[str]:
    """The `state:` retention keys, shortened to minutes."""
    keep = f"{plan.retention * 60:.0f}s"
    forget = f"{(plan.retention + 1) * 60:.0f}s"
    return [
        f"  keep_delivered: {keep}",
        f"  keep_dead: {keep}",
        f"  forget_sessions_after: {forget}",
    ]


def write_config(
    plan: Plan, path: Path, sim: str, sink: str, http_port: int, *, retention: bool
) -> Path:
    """The daemon's config: discovery with age-out, one webhook target, three rules."""
    window = plan.churn * plan.created_within
    lines = [
        "factory:",
        f"  base_url: {sim}",
        f"  api_key: {API_KEY}",
        "  timeout: 5s",
        "  max_requests_per_second: 500",
        "poll:",
        "  interval: 5s",
        "  running: 2s",
        "  jitter: 10%",
        "discover:",
        "  interval: 10s",
        f"  created_within: {plan.created_within * 60:.0f}s",
        f"  max_sessions: {max(10, math.ceil(window * 1.5))}",
        "state:",
        f"  path: {plan.workdir / 'state.db'}",
        *(retention_lines(plan) if retention else []),
        "http:",
        f"  listen: 127.0.0.1:{http_port}",
        "targets:",
        "  sink:",
        "    type: webhook",
        f"    url: {sink}/hook",
        "rules:",
        "  - name: runs",
        "    on: [session.started, session.finished, session.interrupted]",
        "    notify: sink",
        "  - name: stuck",
        "    on: session.stuck",
        "    for: 30s",
        "    repeat: 1m",
        "    notify: sink",
        "  - name: gone",
        "    on: session.deleted",
        "    notify: sink",
        "sessions: []",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # the API key is written literally
    return path


def retention_unknown(said: str) -> bool:
    """Whether `check`'s answer is that the build has no retention keys (not a bad value)."""
    return any(
        "unknown key" in line and any(key in line for key in RETENTION_KEYS)
        for line in said.splitlines()
    )


# --- sampling ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """Raw counters at one moment; two readings make a sample."""

    at: float  # harness monotonic seconds
    cpu: float
    polls: float
    housekeeping_sum: float
    housekeeping_count: float
    sent: float
    watched: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One printed row."""

    minute: float
    rss_mib: float
    fds: float
    db_mib: float
    housekeeping_ms: float  # mean round over the sample
    cpu_us_per_poll: float  # over the sample
    polls_per_min: float  # over the sample
    watched: float
    sent_per_min: float  # notifications sent, over the sample
    rows: Mapping[str, float]


def db_size_mib(path: Path) -> float:
    """The database file and its WAL, in MiB."""
    total = 0
    for name in (path, Path(f"{path}-wal")):
        with contextlib.suppress(FileNotFoundError):
            total += name.stat().st_size
    return total / 2**20


def table_rows(path: Path) -> dict[str, float]:
    """Rows per table, read-only (a busy or missing database gives no figures this time)."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return {}
    try:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND name != 'meta' ORDER BY name"
            )
        ]
        # Table names come from the database's own catalogue, quoted.
        return {
            name: float(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
            for name in names
        }
    except sqlite3.Error:
        return {}
    finally:
        connection.close()


class Sampler:
    """Reads the daemon's figures: /proc, its database, its `/metrics`."""

    def __init__(self, daemon: Daemon, db: Path, metrics_url: str, started: float) -> None:
        self.daemon = daemon
        self.db = db
        self.http = httpx.Client(timeout=5, trust_env=False)
        self.metrics_url = metrics_url
        self.started = started
        self.previous: Reading | None = None

    def metrics(self) -> dict[str, float]:
        """The daemon's `/metrics`, parsed; three tries, 5 s each at most."""
        for attempt in range(3):
            try:
                response = self.http.get(self.metrics_url)
                response.raise_for_status()
                return parse_metrics(response.text)
            except httpx.HTTPError:
                self.daemon.check_alive()
                if attempt == 2:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def reading(self) -> Reading:
        """The counters now."""
        pid = self.daemon.proc.pid
        found = self.metrics()
        return Reading(
            at=time.monotonic(),
            cpu=proc_cpu(pid),
            polls=found.get("factory_watcher_polls_total", 0.0),
            housekeeping_sum=found.get("factory_watcher_housekeeping_seconds_sum", math.nan),
            housekeeping_count=found.get("factory_watcher_housekeeping_seconds_count", math.nan),
            sent=sum(
                value
                for key, value in found.items()
                if key.startswith("factory_watcher_notifications_total{")
                and 'outcome="sent"' in key
            ),
            watched=found.get("factory_watcher_sessions", 0.0),
        )

    def start(self) -> None:
        """The first reading, which the first sample is taken against."""
        self.previous = self.reading()

    def sample(self) -> Sample:
        """One row: state figures now, rates since the previous sample."""
        pid = self.daemon.proc.pid
        now = self.reading()
        before = self.previous
        assert before is not None
        self.previous = now
        polls = now.polls - before.polls
        minutes = (now.at - before.at) / 60
        rounds = now.housekeeping_count - before.housekeeping_count
        housekeeping = (
            (now.housekeeping_sum - before.housekeeping_sum) / rounds * 1000
            if rounds > 0
            else math.nan
        )
        return Sample(
            minute=(now.at - self.started) / 60,
            rss_mib=proc_rss_mib(pid),
            fds=float(proc_fds(pid)),
            db_mib=db_size_mib(self.db),
            housekeeping_ms=housekeeping,
            cpu_us_per_poll=(now.cpu - before.cpu) / polls * 1e6 if polls else math.nan,
            polls_per_min=polls / minutes,
            watched=now.watched,
            sent_per_min=(now.sent - before.sent) / minutes,
            rows=table_rows(self.db),
        )

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


# --- the table ---------------------------------------------------------------------------

FIXED = (  # (column, Sample attribute, format, noise floor for the judgement)
    ("RSS MiB", "rss_mib", "{:.1f}", 10.0),
    ("fds", "fds", "{:.0f}", 20.0),
    ("db MiB", "db_mib", "{:.2f}", 1.0),
    ("hk ms", "housekeeping_ms", "{:.1f}", 10.0),
    ("µs/poll", "cpu_us_per_poll", "{:.0f}", 200.0),
)
ROW_FLOOR = 100.0  # rows: a table of a few dozen rows wobbling is not growth


def cell(template: str, value: float) -> str:
    """A formatted figure; `-` for one not measured."""
    return "-" if math.isnan(value) else template.format(value)


def row_cells(sample: Sample, tables: Sequence[str]) -> list[str]:
    """One sample as table cells."""
    cells = [f"{sample.minute:.1f}"]
    cells += [cell(fmt, getattr(sample, attr)) for _, attr, fmt, _ in FIXED]
    cells += [f"{sample.polls_per_min:.0f}", f"{sample.watched:.0f}", f"{sample.sent_per_min:.0f}"]
    cells += [cell("{:.0f}", sample.rows.get(name, math.nan)) for name in tables]
    return cells


def header_cells(tables: Sequence[str]) -> list[str]:
    """The samples table's header."""
    return ["min", *(name for name, _, _, _ in FIXED), "polls/min", "watched", "sent/min", *tables]


def markdown(rows: Sequence[Sequence[str]]) -> str:
    """Rows as a markdown table, the first row the header."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def judge_samples(samples: Sequence[Sample], tables: Sequence[str]) -> list[Growth]:
    """Every figure's growth over the second half of the run."""
    judged = []
    for name, attr, _, floor in FIXED:
        points = [(s.minute, float(getattr(s, attr))) for s in samples]
        judged.append(judge_growth(name, second_half(points), floor))
    for table in tables:
        points = [(s.minute, s.rows.get(table, math.nan)) for s in samples]
        judged.append(judge_growth(f"rows: {table}", second_half(points), ROW_FLOOR))
    return judged


def growth_table(judged: Sequence[Growth]) -> str:
    """The judgement as a markdown table."""
    rows = [["figure", "first", "last", "slope /min", "fitted growth", "< 10%"]]
    for g in judged:
        if g.verdict is Verdict.NOT_MEASURED:
            rows.append([g.figure, "-", "-", "-", "-", str(g.verdict)])
            continue
        rows.append(
            [
                g.figure,
                f"{g.first:.4g}",
                f"{g.last:.4g}",
                f"{g.slope_per_min:+.3g}",
                f"{g.growth:+.1%}",
                str(g.verdict) if g.verdict is Verdict.OK else f"**{g.verdict}**",
            ]
        )
    return markdown(rows)


# --- the run -----------------------------------------------------------------------------


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """SIGTERM (and SIGINT) end the run through `Stopped`, so every process is stopped."""

    def on_signal(signum: int, frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Churn:
    """The planned control calls, earliest first; new sessions are planned as time passes."""

    sim: Simulator
    plan: Plan
    started: float
    rng: random.Random
    due: list[Planned] = field(default_factory=list)
    created: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    failures_in_a_row: int = 0

    def tick(self, now: float) -> None:
        """Plan sessions due by `now`, then make the calls due (at most a bounded batch)."""
        gap = 60.0 / self.plan.churn
        while self.started + self.created * gap <= now:
            sid = f"soak-{self.created:07d}"
            at = self.started + self.created * gap
            for planned in plan_session(sid, at, self.plan.created_within * 60, self.rng):
                heapq.heappush(self.due, planned)
            self.created += 1
        for _ in range(MAX_ACTIONS_PER_TICK):
            if not self.due or self.due[0].at > now:
                break
            planned = heapq.heappop(self.due)
            try:
                done = self.sim.act(planned)
            except httpx.HTTPError as error:
                self.failures_in_a_row += 1
                self.calls["failed"] += 1
                if self.failures_in_a_row >= CONTROL_FAILURES_ALLOWED:
                    raise SoakError(
                        f"the simulator refused {self.failures_in_a_row} calls: {error}"
                    ) from error
                continue
            self.failures_in_a_row = 0
            self.calls[str(planned.action) if done else "gone"] += 1


def configure(plan: Plan, sim: Simulator, receiver: Receiver, port: int) -> tuple[Path, bool]:
    """Write the config, with retention when `check` accepts it; (config, retention on)."""
    config = plan.workdir / "soak.yaml"
    write_config(plan, config, sim.url, receiver.url, port, retention=True)
    accepted, said = config_accepted(config)
    if accepted:
        print("retention: " + ", ".join(line.strip() for line in retention_lines(plan)))
        for line in said.splitlines():
            if ": warning: " in line:
                print(f"  check: {line.split(': warning: ', 1)[1]}")
        return config, True
    if not retention_unknown(said):
        raise SoakError(f"`check` rejects the soak's config:\n{said}")
    write_config(plan, config, sim.url, receiver.url, port, retention=False)
    accepted, said_without = config_accepted(config)
    if not accepted:
        raise SoakError(f"`check` rejects the soak's config:\n{said_without}")
    print(
        "RETENTION IS NOT IN THIS BUILD: `check` rejected the state: retention keys, "
        "so the run goes without them and shows the growth.\n"
        f"  check said: {said.splitlines()[-1] if said else '(nothing)'}"
    )
    return config, False


def wait_for_metrics(sampler: Sampler, within: float) -> None:
    """Take the first reading once `/metrics` answers; SoakError after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        sampler.daemon.check_alive()
        try:
            sampler.start()
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise SoakError(
                    f"the daemon's /metrics did not answer within {within:.0f} s"
                ) from None
            time.sleep(0.5)
        else:
            return


@dataclass
class Outcome:
    """What a run produced."""

    retention: bool
    samples: list[Sample] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)


def churn_and_sample(
    plan: Plan, sampler: Sampler, churn: Churn, alive: Sequence[Child | Daemon], outcome: Outcome
) -> None:
    """Drive the churn and print a row every `plan.sample` seconds until the run is over."""
    end = churn.started + plan.minutes * 60
    next_sample = churn.started + plan.sample
    while True:
        now = time.monotonic()
        if now < next_sample:
            churn.tick(now)
            time.sleep(max(0.0, min(0.2, next_sample - time.monotonic())))
            continue
        for process in alive:
            process.check_alive()
        sample = sampler.sample()
        if not outcome.tables:
            outcome.tables = sorted(sample.rows)
            print("  ".join(f"{c:>8}" for c in header_cells(outcome.tables)), flush=True)
        outcome.samples.append(sample)
        print("  ".join(f"{c:>8}" for c in row_cells(sample, outcome.tables)), flush=True)
        next_sample += plan.sample
        if now >= end:
            return


def run(plan: Plan) -> Outcome:
    """Start everything, churn and sample for `plan.minutes`, stop everything."""
    parts: list[Child | Daemon] = []
    sampler: Sampler | None = None
    try:
        sim = Simulator()
        parts.append(sim)
        receiver = Receiver()
        parts.append(receiver)
        port = free_port()
        config, retention = configure(plan, sim, receiver, port)
        started = time.monotonic()
        daemon = Daemon(config, plan.workdir / "daemon.log", grace=20)
        parts.append(daemon)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        sampler = Sampler(daemon, plan.workdir / "state.db", metrics_url, started)
        wait_for_metrics(sampler, 60)
        churn = Churn(sim, plan, started, random.Random(plan.seed))
        outcome = Outcome(retention)
        churn_and_sample(plan, sampler, churn, parts, outcome)
        outcome.calls = churn.calls
        outcome.received = receiver.counts()
        return outcome
    finally:
        if sampler is not None:
            sampler.close()
        for part in reversed(parts):  # the daemon first, then what it talks to
            with contextlib.suppress(Exception):
                part.stop()


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the run")
    parser.add_argument("--sample", type=float, default=60.0, help="seconds between rows")
    parser.add_argument("--churn", type=float, default=60.0, help="sessions created a minute")
    parser.add_argument(
        "--retention",
        type=float,
        default=2.0,
        help="minutes: keep_delivered and keep_dead; forget_sessions_after is one more",
    )
    parser.add_argument(
        "--created-within", type=float, default=2.0, help="minutes: discovery's age-out"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep config, log and database")
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print the table and the judgement; the exit status says how it went."""
    args = parse(argv)
    if args.serve_sink:
        return serve_sink()
    if args.minutes <= 0 or args.sample <= 0 or args.churn <= 0:
        print("--minutes, --sample and --churn must be positive", file=sys.stderr)
        return 2
    command = " ".join([Path(PY).name, "bench/soak.py", *(argv or sys.argv[1:])])
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    plan = Plan(
        minutes=args.minutes,
        sample=args.sample,
        churn=args.churn,
        retention=args.retention,
        created_within=args.created_within,
        workdir=workdir,
        seed=args.seed,
    )
    print(
        f"soak: {plan.minutes:g} min, a row every {plan.sample:g} s, {plan.churn:g} sessions/min, "
        f"aged out after {plan.created_within:g} min; work directory {workdir}",
        flush=True,
    )
    load_before = os.getloadavg()
    try:
        with signals_stop():
            outcome = run(plan)
    except (BenchError, Stopped, httpx.HTTPError, OSError) as error:
        print(f"soak failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            for path in sorted(workdir.glob("**/*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()
    load_after = os.getloadavg()
    samples, tables = outcome.samples, outcome.tables
    judged = judge_samples(samples, tables)
    print()
    print(f"command: {command}")
    print(
        f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (1 min)"
    )
    print(f"retention: {'on' if outcome.retention else 'NOT IN THIS BUILD (the run shows growth)'}")
    print("simulator calls: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.calls.items())))
    print(
        "webhooks received: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.received.items()))
    )
    print()
    print(markdown([header_cells(tables), *(row_cells(s, tables) for s in samples)]))
    print()
    print("Growth over the second half of the run (a line fitted to its samples):")
    print()
    print(growth_table(judged))
    missed = [g.figure for g in judged if g.verdict is Verdict.MISSED]
    if missed:
        print(f"\n{len(missed)} figure(s) grew 10% or more: " + ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
