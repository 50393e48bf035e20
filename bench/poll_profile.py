"""Polling profile: the daemon in this process, instrumented (loop lag, cProfile).

`make bench` runs bench/poll_bench.py, the figures of issue 8; this older
benchmark stays for its in-process instruments (`--profile` in particular).

The watcher under test is the production composition root (`Watcher.run` with its
timetable, poll workers, SQLite store and outbox worker) running in this
process. The simulated Factory API (`python -m watcher.testing.sim`) and the
`WebhookReceiver` that notifications go to (webhook target, plain http on
loopback, no pacing) each run in a process of their own, so neither their CPU nor
their threads' hold on a GIL is billed to the watcher.

Phases, all in one watcher run:

1. warm-up: the first poll of every session (each one a SQLite commit, since every
   session is new); reported, not judged.
2. steady state: every session unchanged, polled every `--interval` seconds with
   `--jitter`, for `--duration` rounded to whole poll periods. Reports polls and
   polls/s against the schedule, watcher CPU (total, per poll, per thread), RSS,
   and event-loop lag of a 100 ms ticker.
3. burst: `--burst` of the sessions complete a run at once (simulator control
   route); reports the latency from each change to its webhook's receipt, split
   into detection (change -> outbox commit) and delivery (commit -> receipt).

Then, with `--compare-transport`, the steady state again with the
`httpx_aiohttp.AiohttpTransport` under the same `FactoryClient` (when that package
is importable; it is not a dependency).

Usage: .venv/bin/python bench/poll_profile.py [--sessions 2000] [--interval 10]
       [--duration 30] [--quick] [--profile] [--compare-transport]
Exit status: 0 when every stated target is met, 1 when one is missed, 2 when the
run itself could not be completed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import importlib
import itertools
import json
import math
import os
import pstats
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

# Run as `python bench/poll_profile.py`: bench.common is under the root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchError, Child, stat_cpu
from watcher.core.poll import Answer
from watcher.core.secret import Secret
from watcher.core.settings import (
    FactorySettings,
    PollSettings,
    Rule,
    Settings,
    WatchedSession,
    WebhookTarget,
)
from watcher.daemon import Watcher
from watcher.ops.logs import configure_logging
from watcher.ops.systemd import SystemdNotifier
from watcher.poll.api import FactoryClient
from watcher.store import OutboxStatus
from watcher.testing.sim import DEFAULT_API_KEY
from watcher.testing.sinks import ReceivedWebhook, WebhookReceiver

TICK = 0.1  # the loop-lag ticker's period
# Targets. "Cheap at thousands of sessions": 10,000 sessions at the default 30 s
# interval are 333 polls/s; in half of one core that leaves 1.5 ms of CPU per poll.
CPU_BUDGET_MS = 1.5
BURST_SLACK_S = 5.0  # delivery allowance on top of one poll period
TARGET = "bench"
COMPLETED = "session.completed"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_BYTES = 32  # a float object and its list slot


# --- options ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """What to run."""

    sessions: int
    interval: float
    jitter: float
    duration: float
    burst: float
    concurrency: int
    seed: int
    profile: bool
    compare_transport: bool
    keep: bool
    log_level: str
    quick: bool

    @property
    def mean_period(self) -> float:
        """The daemon keeps the mean period at the interval (watcher.core.schedule)."""
        return self.interval

    @property
    def window(self) -> float:
        """The steady-state window: `duration` rounded to whole mean poll periods.

        Only a whole number of periods counts every session equally.
        """
        return max(1, round(self.duration / self.mean_period)) * self.mean_period


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Read the command line; `--quick` presets a small run of about ten seconds."""
    parser = argparse.ArgumentParser(
        prog="poll_bench.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--sessions", type=int, help="sessions watched (default 2000)")
    parser.add_argument("--interval", type=float, help="poll interval in seconds (default 10)")
    parser.add_argument(
        "--jitter", type=float, default=0.1, help="jitter, fraction of the interval (0.1)"
    )
    parser.add_argument(
        "--duration", type=float, help="steady-state seconds, rounded to whole periods (30)"
    )
    parser.add_argument(
        "--burst", type=float, default=0.1, help="fraction of sessions completing at once (0.1)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=FactorySettings(api_key=Secret("-")).concurrency,
        help="factory.concurrency: poll workers and HTTP connections (default: the config's)",
    )
    parser.add_argument("--seed", type=int, default=1, help="picks the burst's sessions")
    parser.add_argument(
        "--quick", action="store_true", help="200 sessions every 2 s; about 10 s in all"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the event-loop thread during the steady state (inflates CPU figures)",
    )
    parser.add_argument(
        "--compare-transport",
        action="store_true",
        help="repeat the steady state with httpx_aiohttp.AiohttpTransport, if importable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the watcher's log level; logs go to watcher.log in the state directory",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    sessions = args.sessions or (200 if quick else 2000)
    interval = args.interval or (2.0 if quick else 10.0)
    duration = args.duration or (4.0 if quick else 30.0)
    if sessions < 10 or interval <= 0 or duration <= 0 or not 0 <= args.jitter < 1:
        parser.error("need --sessions >= 10, positive --interval and --duration, 0 <= jitter < 1")
    if not 0 < args.burst <= 1 or args.concurrency < 1:
        parser.error("need 0 < --burst <= 1 and --concurrency >= 1")
    return Options(
        sessions=sessions,
        interval=interval,
        jitter=args.jitter,
        duration=duration,
        burst=args.burst,
        concurrency=args.concurrency,
        seed=args.seed,
        profile=args.profile,
        compare_transport=args.compare_transport,
        keep=args.keep,
        log_level=args.log_level.upper(),
        quick=quick,
    )


# --- the simulator in its own process -----------------------------------------------------


class SimProcess(Child):
    """`python -m watcher.testing.sim` in a child process, and its `/_sim/` control routes."""

    def __init__(self, sessions: int, api_key: str) -> None:
        cmd = [sys.executable, "-m", "watcher.testing.sim", "--port", "0"]
        super().__init__([*cmd, "--sessions", str(sessions), "--api-key", api_key], "simulator")
        self._local = threading.local()

    def _request(self, method: str, path: str) -> Any:
        # One keep-alive connection per calling thread (http.client is not thread-safe).
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            parts = urlsplit(self.url)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
            self._local.conn = conn
        conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        response = conn.getresponse()
        body = response.read()
        if response.status >= 300:
            raise BenchError(f"{method} {path}: HTTP {response.status} {body[:200]!r}")
        return json.loads(body) if body else None

    def total_requests(self) -> int:
        """API requests the simulator has answered (control routes excluded)."""
        return int(self._request("GET", "/_sim/stats")["total_requests"])

    def complete(self, session_id: str) -> float:
        """Make a session complete a run; returns the change's time (epoch seconds)."""
        body = self._request("POST", f"/_sim/sessions/{session_id}/complete")
        return float(body["completedAt"]) / 1000


@dataclass(frozen=True, slots=True)
class Receipt:
    """One webhook the receiver process got: event type, session id, epoch seconds."""

    type: str
    session: str
    received: float


class ReceiverProcess(Child):
    """A `WebhookReceiver` in its own process (see `serve_receiver`), so that its
    request threads do not compete with the watcher for this process's GIL.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._receipts: list[Receipt] = []
        super().__init__([sys.executable, __file__, "--serve-receiver"], "webhook receiver")

    def on_line(self, line: str) -> None:
        """Collect one receipt line."""
        raw = json.loads(line)
        with self._lock:
            self._receipts.append(Receipt(raw["type"], raw["session"], raw["received"]))

    def receipts(self) -> list[Receipt]:
        """Every webhook received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._receipts)


def serve_receiver() -> int:
    """The receiver process: print the URL, then one JSON line per webhook, until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = threading.Lock()

    def on_message(message: ReceivedWebhook) -> None:
        body = message.json if isinstance(message.json, dict) else {}
        session = body.get("session") if isinstance(body.get("session"), dict) else {}
        line = json.dumps(
            {"type": body.get("type"), "session": session.get("id"), "received": message.received}
        )
        with lock:
            print(line, flush=True)

    with WebhookReceiver(clock=time.time, on_message=on_message) as receiver:
        print(f"listening on {receiver.url}", flush=True)
        stop.wait()
    return 0


# --- measuring the watcher ---------------------------------------------------------------


@dataclass
class PhaseProbe:
    """What the instruments saw during one phase."""

    loop_lag: list[float] = field(default_factory=list)
    request_s: list[float] = field(default_factory=list)
    fetch_starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    per_second: Counter[int] = field(default_factory=Counter)

    def samples(self) -> int:
        """How many floats the instruments kept (their memory shows up as RSS growth)."""
        starts = sum(len(times) for times in self.fetch_starts.values())
        return len(self.loop_lag) + len(self.request_s) + starts


class Probe:
    """Instruments the watcher without changing it: a timing `SessionSource` wrapper
    and a loop ticker, each filing into the current phase.
    """

    def __init__(self) -> None:
        self.phases: dict[str, PhaseProbe] = {}
        self.current = PhaseProbe()

    def start(self, name: str) -> PhaseProbe:
        """File everything from now on under `name`."""
        self.current = self.phases[name] = PhaseProbe()
        return self.current

    def fetch_started(self, session_id: str) -> None:
        """A poll worker starts a request: count it in its second."""
        now = time.time()
        phase = self.current
        phase.fetch_starts[session_id].append(now)
        phase.per_second[int(now)] += 1

    async def ticker(self) -> None:
        """Sleep in 100 ms steps on a fixed grid and record how late each wake-up is."""
        next_at = time.monotonic() + TICK
        while True:
            await anyio.sleep(max(0.0, next_at - time.monotonic()))
            now = time.monotonic()
            self.current.loop_lag.append(now - next_at)
            next_at += TICK
            if next_at < now:  # skip ticks missed by a long stall instead of bunching up
                next_at = now + TICK


class TimedSource:
    """A `SessionSource` that times each request of the `FactoryClient` it wraps."""

    def __init__(self, inner: FactoryClient, probe: Probe) -> None:
        self.inner = inner
        self.probe = probe

    async def fetch_session(self, session_id: str, *, known: bytes | None = None) -> Answer:
        """Fetch through the wrapped client, recording start time and duration."""
        self.probe.fetch_started(session_id)
        started = time.perf_counter()
        try:
            return await self.inner.fetch_session(session_id, known=known)
        finally:
            self.probe.current.request_s.append(time.perf_counter() - started)

    def forget(self, session_id: str) -> None:
        """Forget through the wrapped client."""
        self.inner.forget(session_id)

    async def aclose(self) -> None:
        """Close the wrapped client."""
        await self.inner.aclose()


def thread_group(name: str) -> str:
    """Fold thread names into the parts of the process that own them."""
    if name == "MainThread":
        return "event loop (MainThread)"
    if name == "AnyIO worker thread":
        return "anyio worker threads (SQLite)"
    if name.endswith("-stdout"):
        return "bench (reading child processes)"
    return name


def thread_cpu() -> dict[int, tuple[str, float]]:
    """(group, CPU seconds) of every live thread of this process, by thread id (Linux)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    found: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            cpu = stat_cpu(f"/proc/self/task/{tid}/stat")
        except FileNotFoundError:
            continue  # the thread ended between listing and reading
        found[int(tid)] = (thread_group(names.get(int(tid), "other")), cpu)
    return found


def thread_deltas(before: Usage, after: Usage) -> dict[str, float]:
    """CPU per thread group between two readings; threads that ended are left out."""
    groups: dict[str, float] = defaultdict(float)
    for tid, (group, cpu) in after.threads.items():
        groups[group] += cpu - before.threads.get(tid, (group, 0.0))[1]
    return dict(groups)


def rss_bytes() -> int:
    """The resident set size of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_SIZE


@dataclass(frozen=True, slots=True)
class Usage:
    """Counters read at a phase boundary."""

    wall: float
    cpu: float
    threads: dict[int, tuple[str, float]]
    rss: int
    max_rss: int
    polls: int
    sim_cpu: float
    sim_requests: int


async def read_usage(watcher: Watcher, sim: SimProcess) -> Usage:
    """Read every counter at once."""
    sim_requests = await anyio.to_thread.run_sync(sim.total_requests)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return Usage(
        wall=time.monotonic(),
        cpu=ru.ru_utime + ru.ru_stime,
        threads=thread_cpu(),
        rss=rss_bytes(),
        max_rss=ru.ru_maxrss * 1024,  # KiB on Linux
        polls=watcher.stats.polls,
        sim_cpu=sim.cpu(),
        sim_requests=sim_requests,
    )


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One phase: counters before and after, and what the probe saw."""

    name: str
    before: Usage
    after: Usage
    probe: PhaseProbe

    @property
    def seconds(self) -> float:
        """Wall-clock length of the phase."""
        return self.after.wall - self.before.wall

    @property
    def polls(self) -> int:
        """Polls the watcher completed in the phase."""
        return self.after.polls - self.before.polls

    @property
    def cpu(self) -> float:
        """Watcher-process CPU seconds used in the phase."""
        return self.after.cpu - self.before.cpu


@dataclass
class BurstResult:
    """The transition burst: per-notification latencies, seconds."""

    changed: int
    expected: int
    received: int
    end_to_end: list[float]
    detect: list[float]
    deliver: list[float]
    drain_s: float
    duplicates: int


@dataclass
class RunResult:
    """Everything one watcher run measured."""

    transport: str
    phases: dict[str, PhaseResult]
    burst: BurstResult | None
    profile: pstats.Stats | None


# --- running the watcher -------------------------------------------------------------------


def session_ids(count: int) -> list[str]:
    """The ids `python -m watcher.testing.sim --sessions N` creates."""
    return [f"sim-{n:04d}" for n in range(1, count + 1)]


def build_settings(opts: Options, sim_url: str, receiver_url: str, state_dir: Path) -> Settings:
    """The watcher's configuration: every simulated session, one rule, one webhook target."""
    return Settings(
        factory=FactorySettings(
            api_key=Secret(DEFAULT_API_KEY),
            base_url=sim_url,
            timeout=timedelta(seconds=10),
            concurrency=opts.concurrency,
            max_requests_per_second=10_000.0,  # the default 10/s would cap the run
        ),
        state_path=state_dir / "state.db",
        poll=PollSettings(interval=timedelta(seconds=opts.interval), jitter=opts.jitter),
        sessions=tuple(WatchedSession(id=sid) for sid in session_ids(opts.sessions)),
        targets={
            TARGET: WebhookTarget(name=TARGET, url=receiver_url + "/hook", allow_http=True),
        },
        rules=(Rule(name="completed", on=(COMPLETED,), notify=(TARGET,)),),
    )


def make_transport(name: str, concurrency: int) -> httpx.AsyncBaseTransport | None:
    """None for httpx's own transport; the httpx_aiohttp one when asked for and present."""
    if name == "httpx":
        return None
    module = importlib.import_module("httpx_aiohttp")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: httpx.AsyncBaseTransport = module.AiohttpTransport(limits=limits)
    return transport


def httpx_aiohttp_available() -> str | None:
    """The installed httpx_aiohttp version, or None when it cannot be imported."""
    try:
        module = importlib.import_module("httpx_aiohttp")
    except ImportError:
        return None
    return str(getattr(module, "__version__", "unknown version"))


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Check `condition` every 50 ms until it holds; BenchError after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f} s waiting for {what}")
        await anyio.sleep(0.05)


def fire_burst(sim: SimProcess, ids: Sequence[str]) -> dict[str, float]:
    """Complete a run of every session in `ids`, as fast as the control route allows."""
    return {sid: sim.complete(sid) for sid in ids}


async def run_watcher(
    opts: Options,
    sim: SimProcess,
    receiver: ReceiverProcess,
    state_dir: Path,
    *,
    transport: str,
    burst: bool,
) -> RunResult:
    """Start a watcher on every session, measure the phases, stop it."""
    settings = build_settings(opts, sim.url, receiver.url, state_dir)
    probe = Probe()
    factory = settings.factory
    client = FactoryClient(
        factory.base_url,
        factory.api_key,
        timeout=factory.timeout.total_seconds(),
        concurrency=factory.concurrency,
        transport=make_transport(transport, factory.concurrency),
    )
    watcher = Watcher(
        settings, source=TimedSource(client, probe), systemd=SystemdNotifier(address=None)
    )
    phases: dict[str, PhaseResult] = {}
    burst_result: BurstResult | None = None
    profiler: cProfile.Profile | None = None
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(watcher.run, on_ready=ready.set, handle_signals=False))
        with anyio.fail_after(60):
            await ready.wait()
        ticker_scope = anyio.CancelScope()

        async def ticker() -> None:
            with ticker_scope:
                await probe.ticker()

        tg.start_soon(ticker)

        # 1. Warm-up: every session's first poll, spread over one interval.
        probe.start("warm-up")
        before = await read_usage(watcher, sim)
        await wait_until(
            lambda: watcher.stats.polls >= opts.sessions,
            within=max(120.0, opts.interval * 4),
            what="the first poll of every session",
        )
        after = await read_usage(watcher, sim)
        phases["warm-up"] = PhaseResult("warm-up", before, after, probe.current)

        # 2. Steady state: nothing changes; whole poll periods.
        probe.start("steady")
        before = after
        if opts.profile:
            # Thread CPU time, not wall time: waiting in epoll is not work.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        await anyio.sleep(opts.window)
        if profiler is not None:
            profiler.disable()
        after = await read_usage(watcher, sim)
        phases["steady"] = PhaseResult("steady", before, after, probe.current)

        # 3. Burst: a fraction of the sessions complete a run at once.
        if burst:
            probe.start("burst")
            before = after
            burst_result = await run_burst(opts, sim, receiver)
            after = await read_usage(watcher, sim)
            phases["burst"] = PhaseResult("burst", before, after, probe.current)

        ticker_scope.cancel()
        watcher.request_stop()
        # The daemon drains for at most DRAIN_DEADLINE; this only guards the benchmark.
        tg.cancel_scope.deadline = anyio.current_time() + 30
    if burst_result is not None:
        add_store_breakdown(watcher, burst_result)
    watcher.store.close()
    stats = None if profiler is None else pstats.Stats(profiler)
    return RunResult(transport, phases, burst_result, stats)


async def run_burst(opts: Options, sim: SimProcess, receiver: ReceiverProcess) -> BurstResult:
    """Complete `--burst` of the sessions, wait for every notification, time each one."""
    ids = session_ids(opts.sessions)
    count = max(1, round(len(ids) * opts.burst))
    chosen = random.Random(opts.seed).sample(ids, count)
    already = len(receiver.receipts())
    started = time.monotonic()
    changed_at = await anyio.to_thread.run_sync(fire_burst, sim, chosen)
    # A change waits for its session's next poll (one period at most, more when polls
    # run late), then for its turn in the outbox lane.
    within = opts.interval * (1 + opts.jitter) * 3 + 30

    def all_received() -> bool:
        return len(receiver.receipts()) - already >= count

    with contextlib.suppress(BenchError):
        await wait_until(all_received, within, "every burst notification")
    drain_s = time.monotonic() - started
    latencies: list[float] = []
    seen: Counter[str] = Counter()
    for receipt in receiver.receipts()[already:]:
        if receipt.type != COMPLETED or receipt.session not in changed_at:
            continue
        seen[receipt.session] += 1
        if seen[receipt.session] == 1:
            latencies.append(receipt.received - changed_at[receipt.session])
    return BurstResult(
        changed=count,
        expected=count,
        received=len(seen),
        end_to_end=latencies,
        detect=[],
        deliver=[],
        drain_s=drain_s,
        duplicates=sum(n - 1 for n in seen.values()),
    )


def add_store_breakdown(watcher: Watcher, result: BurstResult) -> None:
    """Split latency at the outbox commit, from the delivered rows' timestamps."""
    rows = watcher.store.list_outbox(OutboxStatus.DELIVERED, limit=result.expected * 2 + 10)
    for row in rows:
        if row.target != TARGET or row.event.type != COMPLETED or row.finished_at is None:
            continue
        result.detect.append((row.created_at - row.event.occurred_at).total_seconds())
        result.deliver.append((row.finished_at - row.created_at).total_seconds())


# --- reporting -----------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def dist(values: Sequence[float], unit: str = "ms") -> str:
    """p50 / p95 / p99 / max of a sample of seconds, shown in ms or s."""
    if not values:
        return "no samples"

    def show(value: float) -> str:
        return f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.2f} s"

    return (
        f"p50 {show(percentile(values, 50))}, p95 {show(percentile(values, 95))}, "
        f"p99 {show(percentile(values, 99))}, max {show(max(values))}  (n={len(values)})"
    )


def mib(value: float) -> str:
    """Bytes as MiB."""
    return f"{value / 2**20:.1f} MiB"


def max_gap(phase: PhaseProbe) -> float:
    """The longest time between two consecutive polls of one session in the phase."""
    gaps = [b - a for starts in phase.fetch_starts.values() for a, b in itertools.pairwise(starts)]
    return max(gaps, default=0.0)


@dataclass
class Verdicts:
    """Targets stated by the benchmark and whether they were met."""

    lines: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, text: str) -> None:
        """Record one target."""
        self.lines.append((ok, text))

    @property
    def all_met(self) -> bool:
        """Whether no target was missed."""
        return all(ok for ok, _ in self.lines)


def report_phase(
    opts: Options, result: PhaseResult, verdicts: Verdicts | None, title: str = ""
) -> None:
    """Print one phase's figures; judge the steady state against its targets."""
    p = result.probe
    seconds = result.seconds
    polls = result.polls
    cpu = result.cpu
    print(f"\n== {title or result.name}: {seconds:.1f} s ==")
    expected_rate = opts.sessions / opts.mean_period
    rate = polls / seconds if seconds else 0.0
    sim_requests = result.after.sim_requests - result.before.sim_requests
    print(f"polls completed      {polls}  (simulator answered {sim_requests} API requests)")
    if result.name == "steady":
        print(
            f"polls/s              {rate:.1f} achieved; expected {expected_rate:.1f} "
            f"(N/I = {opts.sessions / opts.interval:.1f})"
        )
        busiest = max(p.per_second.values(), default=0)
        print(
            f"poll starts per s    busiest second {busiest}, mean {rate:.1f} "
            f"(first polls spread over one interval)"
        )
        print(
            f"per-session gap      max {max_gap(p):.2f} s between two polls of one session "
            f"(schedule allows {opts.interval * (1 + opts.jitter):.2f} s)"
        )
    else:
        print(f"polls/s              {rate:.1f}")
    share = cpu / seconds * 100 if seconds else 0.0
    per_poll = f"{cpu / polls * 1000:.2f} ms CPU per poll" if polls else "no polls"
    print(f"watcher CPU          {cpu:.2f} s = {share:.1f}% of one core; {per_poll}")
    sim_cpu = result.after.sim_cpu - result.before.sim_cpu
    per_req = f", {sim_cpu / sim_requests * 1000:.2f} ms per request" if sim_requests else ""
    print(f"simulator CPU        {sim_cpu:.2f} s (separate process, not billed above{per_req})")
    listed = 0.0
    for name, spent in sorted(thread_deltas(result.before, result.after).items()):
        if spent > 0:
            listed += spent
            print(f"  {name:<34} {spent:6.2f} s")
    if cpu - listed >= 0.01:
        print(f"  {'threads that ended in the phase':<34} {cpu - listed:6.2f} s")
    growth = result.after.rss - result.before.rss
    print(
        f"memory               RSS {mib(result.after.rss)} (grew {mib(growth)} in the phase), "
        f"peak {mib(result.after.max_rss)}"
    )
    samples = p.samples()
    print(
        f"  the bench's own samples: {samples} floats, about {mib(samples * SAMPLE_BYTES)} "
        "of that growth"
    )
    print(f"loop lag (100 ms)    {dist(p.loop_lag)}")
    print(f"request latency      {dist(p.request_s)}")
    if verdicts is None or result.name != "steady":
        return
    verdicts.check(
        rate >= 0.95 * expected_rate,
        f"steady: polls/s >= 95% of expected ({rate:.1f} vs {expected_rate:.1f})",
    )
    per_poll_ms = cpu / max(polls, 1) * 1000
    verdicts.check(
        polls > 0 and per_poll_ms <= CPU_BUDGET_MS,
        f"steady: CPU per poll <= {CPU_BUDGET_MS} ms, i.e. 10k sessions at 30 s in half a core "
        f"({per_poll_ms:.2f} ms)",
    )
    lag_p99 = percentile(p.loop_lag, 99)
    verdicts.check(
        lag_p99 <= 0.1, f"steady: event-loop lag p99 <= 100 ms ({lag_p99 * 1000:.1f} ms)"
    )


def report_burst(opts: Options, burst: BurstResult, verdicts: Verdicts | None) -> None:
    """Print the burst's latencies and judge them."""
    print(f"\n== burst: {burst.changed} sessions complete a run at once ==")
    print(
        f"notifications        {burst.received}/{burst.expected} received in "
        f"{burst.drain_s:.1f} s, {burst.duplicates} duplicate(s)"
    )
    print(f"change -> receipt    {dist(burst.end_to_end, 's')}")
    print(f"  change -> commit   {dist(burst.detect, 's')}  (waiting for the next poll)")
    print(f"  commit -> sent     {dist(burst.deliver, 's')}  (outbox lane, one POST at a time)")
    if verdicts is None:
        return
    limit = opts.interval * (1 + opts.jitter) + BURST_SLACK_S
    verdicts.check(
        burst.received == burst.expected and burst.duplicates == 0,
        f"burst: every notification delivered once ({burst.received}/{burst.expected})",
    )
    worst = max(burst.end_to_end, default=math.inf)
    verdicts.check(
        worst <= limit,
        f"burst: max change -> receipt <= one period + {BURST_SLACK_S:g} s = {limit:.1f} s "
        f"({worst:.2f} s)",
    )


def package_of(filename: str, funcname: str) -> str:
    """Which library a profiled function belongs to."""
    if filename == "~":
        return "builtins: " + funcname.strip("<>").split(" of ")[0].removeprefix("built-in ")
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/watcher/" in path:
        return "watcher." + path.split("/watcher/")[1].removesuffix(".py").replace("/", ".")
    if "/bench/" in path:
        return "bench (instruments)"
    if "/lib/python" in path:
        return "stdlib: " + path.split("/lib/python")[1].split("/", 2)[1].removesuffix(".py")
    return path


# (label, file suffix, function) of the steps whose inclusive time the profile reports.
INCLUSIVE = (
    ("Poller.poll (one whole poll, loop side)", "watcher/daemon/poller.py", "poll"),
    ("FactoryClient.fetch_session (HTTP request)", "watcher/poll/api.py", "fetch_session"),
    (
        "  httpcore current_async_library (sniffio look-up)",
        "_synchronization.py",
        "current_async_library",
    ),
    ("classify_response (JSON + snapshot parsing)", "watcher/poll/api.py", "classify_response"),
    ("Watcher.db (hand-off to the SQLite thread)", "watcher/daemon/__init__.py", "db"),
    ("PollScheduler.tick (queue a due poll)", "watcher/daemon/scheduler.py", "tick"),
)


def report_profile(stats: pstats.Stats) -> None:
    """Event-loop thread time by library, and the heaviest functions (cProfile, tottime)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1.0
    groups: Counter[str] = Counter()
    for (filename, _line, funcname), entry in raw.items():
        groups[package_of(filename, funcname)] += entry[2]
    print("\n== profile: event-loop thread CPU, self time by library (cProfile inflates it) ==")
    for name, spent in groups.most_common(14):
        print(f"  {name:<44} {spent / total * 100:5.1f}%")
    print("  inclusive time of the main steps (nested steps overlap):")
    for label, suffix, funcname in INCLUSIVE:
        spent = sum(
            entry[3]
            for (filename, _line, name), entry in raw.items()
            if name == funcname and filename.replace("\\", "/").endswith(suffix)
        )
        print(f"    {spent / total * 100:5.1f}%  {label}")
    print("  heaviest functions (self time):")
    top = sorted(raw.items(), key=lambda item: -item[1][2])[:12]
    for (filename, line, funcname), entry in top:
        where = f"{package_of(filename, funcname)}:{funcname}:{line}"
        print(f"    {entry[2] / total * 100:5.1f}%  {entry[1]:>8} calls  {where}")


def report_comparison(base: PhaseResult, other: PhaseResult, version: str) -> None:
    """The steady state under both transports, side by side."""

    def per_poll(result: PhaseResult) -> float:
        return result.cpu / result.polls * 1000 if result.polls else math.nan

    print(f"\n== transport comparison (steady state; httpx_aiohttp {version}) ==")
    for name, result in (("httpx (default)", base), ("httpx_aiohttp", other)):
        print(
            f"  {name:<16} {per_poll(result):.2f} ms CPU per poll, "
            f"{result.cpu / result.seconds * 100:.1f}% of one core, "
            f"request p50 {percentile(result.probe.request_s, 50) * 1000:.1f} ms"
        )


# --- main --------------------------------------------------------------------------------


async def bench(opts: Options, workdir: Path) -> int:
    """Run every phase and print the report; the exit status."""
    # Profiling doubles the loop's CPU: its figures explain, they are not judged.
    verdicts = None if opts.profile else Verdicts()
    aiohttp_version = httpx_aiohttp_available()
    print(
        f"factory-watcher polling benchmark: {opts.sessions} sessions, interval "
        f"{opts.interval:g} s, jitter {opts.jitter:.0%}, steady window {opts.window:.1f} s, "
        f"concurrency {opts.concurrency}, burst {opts.burst:.0%}"
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), load average {load} "
        f"(other work on the machine skews latencies more than CPU counts); "
        f"httpx {httpx.__version__}; state in {workdir}"
    )
    with SimProcess(opts.sessions, DEFAULT_API_KEY) as sim, ReceiverProcess() as receiver:
        print(f"simulator pid {sim.pid} at {sim.url}; webhook receiver pid {receiver.pid}")
        main = await run_watcher(
            opts, sim, receiver, workdir / "httpx", transport="httpx", burst=True
        )
        for name in ("warm-up", "steady", "burst"):
            if name in main.phases:
                report_phase(opts, main.phases[name], verdicts)
        if main.burst is not None:
            report_burst(opts, main.burst, verdicts)
        if main.profile is not None:
            report_profile(main.profile)
        if aiohttp_version is None:
            print(
                "\n== transport comparison: skipped; httpx_aiohttp is not importable "
                "(not installed, and not a dependency) =="
            )
        elif opts.compare_transport:
            other = await run_watcher(
                opts, sim, receiver, workdir / "aiohttp", transport="aiohttp", burst=False
            )
            report_phase(opts, other.phases["steady"], None, "steady, httpx_aiohttp transport")
            report_comparison(main.phases["steady"], other.phases["steady"], aiohttp_version)
        else:
            print(
                f"\n(httpx_aiohttp {aiohttp_version} is importable: "
                "--compare-transport measures it)"
            )
    if verdicts is None:
        print("\n== targets: not judged under --profile ==")
        return 0
    print("\n== targets ==")
    for ok, text in verdicts.lines:
        print(f"  {'met   ' if ok else 'MISSED'} {text}")
    return 0 if verdicts.all_met else 1


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    """A temporary state directory, removed afterwards unless `keep`."""
    path = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == ["--serve-receiver"]:  # the child started by ReceiverProcess
        return serve_receiver()
    opts = parse_options(args)
    with workdir(opts.keep) as path:
        log_file = (path / "watcher.log").open("w", encoding="utf-8")
        with log_file:
            configure_logging(opts.log_level, stream=log_file, secrets=(DEFAULT_API_KEY,))
            try:
                return anyio.run(bench, opts, path)
            except BenchError as error:
                print(f"benchmark failed: {error}", file=sys.stderr)
                return 2


if __name__ == "__main__":
    raise SystemExit(main())
