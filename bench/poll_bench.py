"""`make bench`: what watching sessions costs the real daemon, against a fast fake API.

Everything runs on 127.0.0.1, each part in its own process, so that only the
daemon's own work is billed to the daemon:

- `bench/fakeapi.py`: the fake Factory API (aiohttp, pre-rendered bodies) and
  the webhook sink, which times each notification against its change;
- `bench/bare.py`: bare polling loops over the same server (GET + `.json()`,
  16 in flight): httpx on httpx-aiohttp's transport, plain httpx, raw aiohttp;
- the daemon itself: `python -m watcher run -c <config>`, the production
  command, with a generated config. Its CPU (user + system, all threads) and
  RSS come from /proc/<pid>; its polls are the requests the fake API served.

Scenarios, each ending in rows of one table:

1. cost: 2,000 unchanged sessions every `--interval`; CPU per poll of the
   daemon and of the bare loops, and the ratio to httpx-aiohttp's loop;
2. throughput: the same 2,000 sessions due four times as often as one core can
   serve; polls per CPU-second, i.e. polls/s on one core;
3. burst: 1,000 of them complete a run at once; time until the last webhook;
4. memory: RSS with 100 and with 10,000 watched sessions;
5. discovery: 10,000 discovered sessions, 1% changing per minute, 100 ms added
   to every API answer; CPU share, requests/min, change -> notification;
6. adaptive: 1,000 sessions, 5% running: requests/hour adaptive vs a fixed
   interval equal to the running one;
7. latency: 3,000 sessions every 10 s with 100 ms added to every answer;
   whether the in-flight cap (`factory.concurrency`) holds the polls back.

5 and 6 need the `discover:` section and per-state `poll:` intervals; should
the installed watcher reject that config (`factory-watcher check`), they print
why and are not judged. Every daemon gets `factory.max_requests_per_second`
10,000 (scenario 5: 50, a realistic budget; 6: 1,000), so the request budget
never caps what is measured.

Exit status: 0 when every measured target is met, 1 when one is missed, 2 when
the run itself failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python bench/poll_bench.py`: bench.common is under the root

from bench.common import (  # noqa: E402
    BenchError,
    Daemon,
    config_accepted,
)

PY = sys.executable
API_KEY = "fk-bench-key-0000"
MAX_BUDGET = 10_000.0  # the highest factory.max_requests_per_second the config accepts


# --- processes -----------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll `condition` every 50 ms; raise BenchError after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {within:.0f} s waiting for {what}")
        time.sleep(0.05)


class FakeApi:
    """bench/fakeapi.py in a child process."""

    def __init__(self, sessions: int, latency: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [
                *(PY, str(ROOT / "bench" / "fakeapi.py")),
                *("--sessions", str(sessions), "--latency", str(latency)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise BenchError(f"the fake API did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)

    def ctl(self, action: str, body: dict[str, Any] | None = None) -> Any:
        """POST a control route; its JSON answer."""
        response = self.http.post(f"/_ctl/{action}", json=body or {})
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        """Request counters and webhook receipts."""
        return self.http.get("/_ctl/stats").raise_for_status().json()  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def session_ids(count: int, prefix: str = "s-") -> list[str]:
    """The ids bench/fakeapi.py gives its first `count` sessions."""
    return [f"{prefix}{i:05d}" for i in range(count)]


def write_config(
    path: Path,
    api: FakeApi,
    state: Path,
    ids: Sequence[str],
    *,
    poll: str = "  interval: 1s\n  jitter: 10%\n",
    budget: float = MAX_BUDGET,
    factory_extra: str = "",
    extra: str = "",
) -> Path:
    """A daemon config: the fake API, one webhook target (the fake's sink), one rule.

    `budget` is `factory.max_requests_per_second`: the default 10/s would cap
    every scenario that measures the daemon's own speed, so they get the most
    the config allows.
    """
    lines = [
        "factory:",
        f"  base_url: {api.url}",
        f"  api_key: {API_KEY}",
        "  timeout: 10s",
        "  unavailable_after: 10m",
        f"  max_requests_per_second: {budget:g}",
        factory_extra.rstrip("\n"),
        "poll:",
        poll.rstrip("\n"),
        "state:",
        f"  path: {state}",
        extra.rstrip("\n"),
        "targets:",
        "  sink:",
        "    type: webhook",
        f"    url: {api.url}/hook",
        "rules:",
        "  - name: completed",
        "    on: session.completed",
        "    notify: [sink]",
    ]
    if ids:
        lines.append("sessions:")
        lines.extend(f"  - id: {sid}" for sid in ids)
    else:
        lines.append("sessions: []")
    path.write_text("\n".join(line for line in lines if line) + "\n")
    path.chmod(0o600)  # the API key is written literally
    return path


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon
    finally:
        daemon.stop()


def wait_for_gets(api: FakeApi, daemon: Daemon, count: int, within: float) -> None:
    """Until the fake API has served `count` session GETs in all."""

    def reached() -> bool:
        daemon.check_alive()
        return int(api.stats()["gets"]) >= count

    wait_until(reached, within, f"{count} polls")


@dataclass(frozen=True)
class Window:
    """What the daemon did over a measured stretch of wall time."""

    seconds: float
    cpu: float
    gets: int
    lists: int

    @property
    def us_per_get(self) -> float:
        return self.cpu / self.gets * 1e6 if self.gets else math.inf


def measure(api: FakeApi, daemon: Daemon, seconds: float) -> Window:
    """Daemon CPU and requests served over `seconds` of wall time."""
    before, cpu0, t0 = api.stats(), daemon.cpu(), time.monotonic()
    time.sleep(seconds)
    after, cpu1, t1 = api.stats(), daemon.cpu(), time.monotonic()
    daemon.check_alive()
    return Window(
        seconds=t1 - t0,
        cpu=cpu1 - cpu0,
        gets=int(after["gets"]) - int(before["gets"]),
        lists=int(after["lists"]) - int(before["lists"]),
    )


def measure_windows(api: FakeApi, daemon: Daemon, seconds: float, each: float) -> list[Window]:
    """`measure` in consecutive windows of `each` seconds."""
    return [measure(api, daemon, each) for _ in range(max(1, round(seconds / each)))]


def least_disturbed(windows: Sequence[Window]) -> Window:
    """The window with the least CPU per poll: other work on a shared machine only adds."""
    return min(windows, key=lambda w: w.us_per_get)


def median_us(windows: Sequence[Window]) -> float:
    """The median CPU per poll over `windows`."""
    return sorted(w.us_per_get for w in windows)[len(windows) // 2]


def bare_loop(kind: str, api: FakeApi, sessions: int, seconds: float) -> dict[str, Any]:
    """One bench/bare.py run; its JSON line."""
    done = subprocess.run(
        [
            *(PY, str(ROOT / "bench" / "bare.py"), kind, api.url),
            *("--sessions", str(sessions), "--seconds", str(seconds)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    if done.returncode != 0:
        raise BenchError(f"bare loop {kind} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# --- the table -------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: not judged


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, figure: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(figure, value, target, met))
        mark = "" if met is None else (" ok" if met else " MISSED")
        print(f"  {figure}: {value}{'  (target ' + target + ')' if target else ''}{mark}")

    def render(self) -> str:
        lines = ["| figure | value | target | |", "|---|---|---|---|"]
        for row in self.rows:
            verdict = "" if row.met is None else ("met" if row.met else "**missed**")
            lines.append(f"| {row.figure} | {row.value} | {row.target} | {verdict} |")
        return "\n".join(lines)

    @property
    def missed(self) -> list[Row]:
        return [row for row in self.rows if row.met is False]


# --- scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    sessions: int
    interval: float
    window: float
    bare_seconds: float
    burst: int
    burst_interval: float
    latency_sessions: int
    latency_concurrency: int
    big: int
    discover_interval: float
    discover_window: float
    adaptive_window: float
    workdir: Path


def poll_config(
    opts: Options, api: FakeApi, name: str, ids: Sequence[str], interval: float
) -> Path:
    """A config polling `ids` every `interval` seconds (10% jitter), state in `name`.db."""
    return write_config(
        opts.workdir / f"{name}.yaml",
        api,
        opts.workdir / f"{name}.db",
        ids,
        poll=f"  interval: {interval * 1000:.0f}ms\n  jitter: 10%\n",
    )


def scenario_cost(opts: Options, table: Table) -> None:
    """Scenarios 1-2: CPU per unchanged poll vs bare loops; polls/s on one core.

    The daemon gets more polls due than it can serve, as the bare loops have
    requests to make: both run flat out against the same server, so both get
    the same batching from the event loop. A poll falling due while the
    previous one of its session is still queued is skipped (a heap pop).
    """
    print(f"[1-2] cost: {opts.sessions} unchanged sessions, daemon vs bare loops, flat out")
    api = FakeApi(opts.sessions)
    try:
        floor = [bare_loop("httpx-aiohttp", api, opts.sessions, opts.bare_seconds)]
        others = {
            kind: bare_loop(kind, api, opts.sessions, opts.bare_seconds)
            for kind in ("httpx", "aiohttp", "transport")
        }
        ids = session_ids(opts.sessions)
        config = poll_config(opts, api, "cost", ids, opts.interval)
        with running(Daemon(config, opts.workdir / "cost.log")) as daemon:
            # Two full rounds: the first stores every session, the second learns
            # each body's digest; from then on every poll is an unchanged one.
            wait_for_gets(api, daemon, 2 * opts.sessions, 120)
            time.sleep(1.0)
            windows = measure_windows(api, daemon, opts.window, 2.0)
            rss = daemon.rss()
        floor.append(bare_loop("httpx-aiohttp", api, opts.sessions, opts.bare_seconds))
    finally:
        api.stop()

    cost = least_disturbed(windows)
    floor_us = min(run["us_per_request"] for run in floor)
    ratio = cost.us_per_get / floor_us
    polls = sum(w.gets for w in windows)
    seconds = sum(w.seconds for w in windows)
    busy = sum(w.cpu for w in windows) / seconds
    table.add(
        "daemon CPU per unchanged poll",
        f"{cost.us_per_get:.0f} µs (median {median_us(windows):.0f}; {polls / seconds:.0f} "
        f"polls/s of {opts.sessions / opts.interval:.0f}/s due, {busy:.0%} of a core)",
    )
    table.add(
        "bare loop, httpx on httpx-aiohttp, CPU per request",
        " / ".join(f"{run['us_per_request']:.0f}" for run in floor)
        + " µs before / after the daemon (median "
        + " / ".join(f"{run['us_median']:.0f}" for run in floor)
        + f"; {floor[0]['rate']:.0f} req/s)",
    )
    for kind, label in (
        ("httpx", "plain httpx.AsyncClient"),
        ("aiohttp", "raw aiohttp"),
        ("transport", "httpx.Request straight to the aiohttp transport"),
    ):
        run = others[kind]
        table.add(
            f"bare loop, {label}, CPU per request",
            f"{run['us_per_request']:.0f} µs (median {run['us_median']:.0f}; "
            f"{run['rate']:.0f} req/s)",
        )
    table.add("ratio daemon / bare httpx-aiohttp", f"{ratio:.2f}", "≤ 1.3", ratio <= 1.3)
    per_core = 1e6 / cost.us_per_get
    table.add(
        "polls/s on one core (1 / CPU per poll)",
        f"{per_core:.0f} (median window {1e6 / median_us(windows):.0f})",
        "≥ 2,500",
        per_core >= 2500,
    )
    table.add(f"RSS, {opts.sessions} sessions", f"{rss:.1f} MiB")


def scenario_burst(opts: Options, table: Table) -> None:
    """Scenario 3: `burst` sessions complete a run at once; one webhook target gets them all."""
    count = opts.burst
    print(f"[3] burst: {count} sessions polled every {opts.burst_interval:g} s complete at once")
    api = FakeApi(count)
    try:
        config = poll_config(opts, api, "burst", session_ids(count), opts.burst_interval)
        with running(Daemon(config, opts.workdir / "burst.log")) as daemon:
            wait_for_gets(api, daemon, 2 * count, 120)
            time.sleep(opts.burst_interval)
            api.ctl("reset")
            changed_at = float(api.ctl("complete", {"count": count})["at"])

            def drained() -> bool:
                daemon.check_alive()
                return int(api.stats()["hooks"]) >= count

            with contextlib.suppress(BenchError):
                wait_until(drained, 60, "the burst to drain")
            burst = api.stats()
    finally:
        api.stop()
    delivered = int(burst["hooks"])
    first, last = burst["first_hook_at"], burst["last_hook_at"]
    total = (float(last) - changed_at) if last else math.inf
    spread = (float(last) - float(first)) if last and first else math.inf
    table.add(
        f"burst of {count} to one webhook: change -> last delivered",
        f"{total:.2f} s ({delivered} delivered, {burst['duplicates']} duplicates; "
        f"first -> last delivered {spread:.2f} s; polled every {opts.burst_interval:g} s)",
        "≤ 10 s, all, once",
        delivered == count and burst["duplicates"] == 0 and total <= 10,
    )


def scenario_memory(opts: Options, table: Table) -> None:
    """Scenario 4: RSS after every session was polled twice, at 100 and at `big` sessions."""
    print(f"[4] memory: 100 and {opts.big} watched sessions")
    api = FakeApi(opts.big)
    try:
        for count, interval in ((100, 1.0), (opts.big, max(1.0, opts.big / 2000))):
            config = write_config(
                opts.workdir / f"rss{count}.yaml",
                api,
                opts.workdir / f"rss{count}.db",
                session_ids(count),
                poll=f"  interval: {interval:g}s\n  jitter: 10%\n",
            )
            with running(Daemon(config, opts.workdir / f"rss{count}.log")) as daemon:
                start = int(api.stats()["gets"])
                wait_for_gets(api, daemon, start + 2 * count, 180)
                rss = daemon.rss()
            if count == 100:
                table.add("RSS, 100 sessions", f"{rss:.1f} MiB")
            else:
                table.add(
                    f"RSS, {count} sessions", f"{rss:.1f} MiB", "≤ 150 MB", rss * 1.048576 <= 150
                )
    finally:
        api.stop()


def scenario_latency(opts: Options, table: Table) -> None:
    """Scenario 7: with 100 ms per answer, does the in-flight cap hold back the polls due?"""
    count, interval = opts.latency_sessions, 10.0
    due = count / interval
    print(f"[7] latency: {count} sessions every {interval:g} s, +100 ms per answer")
    api = FakeApi(count, latency=0.1)
    try:
        config = write_config(
            opts.workdir / "latency.yaml",
            api,
            opts.workdir / "latency.db",
            session_ids(count),
            poll=f"  interval: {interval:g}s\n  jitter: 10%\n",
            factory_extra=(
                f"  concurrency: {opts.latency_concurrency}\n" if opts.latency_concurrency else ""
            ),
        )
        with running(Daemon(config, opts.workdir / "latency.log")) as daemon:
            wait_for_gets(api, daemon, 2 * count, 120)
            window = measure(api, daemon, opts.window)
    finally:
        api.stop()
    rate = window.gets / window.seconds
    cap = opts.latency_concurrency or "64 (default)"
    table.add(
        f"polls/s with 100 ms per answer, concurrency {cap}",
        f"{rate:.0f} of {due:.0f}/s due ({window.cpu / window.seconds:.0%} of a core)",
        "≥ 95% of due",
        rate >= 0.95 * due,
    )


NEEDS_DISCOVERY = "needs discovery (branch discover)"
NEEDS_ADAPTIVE = "needs adaptive polling (branch discover)"


def scenario_discovery(opts: Options, table: Table) -> None:
    """Scenario 5: 10,000 discovered sessions, 1%/min changing, 100 ms latency."""
    count = opts.big
    interval = opts.discover_interval
    print(f"[5] discovery: {count} listed sessions, 1%/min changing, +100 ms per answer")
    api = FakeApi(count, latency=0.1)
    try:
        config = write_config(
            opts.workdir / "discover.yaml",
            api,
            opts.workdir / "discover.db",
            (),
            poll="  interval: 30s\n  running: 5s\n  idle: 30s\n  max_idle: 10m\n  jitter: 10%\n",
            budget=50,  # a realistic budget: the list stands in for most polls
            extra=f"discover:\n  interval: {interval:g}s\n  max_sessions: {count}\n",
        )
        accepted, said = config_accepted(config)
        if not accepted:
            print(f"    not run: {NEEDS_DISCOVERY}\n    check said: {said.splitlines()[-1]}")
            for figure in (
                f"{count} discovered: CPU share of one core",
                f"{count} discovered: requests/min",
                f"{count} discovered: change -> notification p50 / p99",
            ):
                table.add(figure, f"not run: {NEEDS_DISCOVERY}")
            return
        with running(Daemon(config, opts.workdir / "discover.log")) as daemon:
            # The first sweep lists every session and takes its baseline.
            wait_until(
                lambda: int(api.stats()["lists"]) >= count // 100 and daemon.proc.poll() is None,
                interval * 3 + 120,
                "the first discovery sweep",
            )
            time.sleep(interval)
            api.ctl("reset")
            api.ctl("churn", {"per_minute": count / 100})
            window = measure(api, daemon, opts.discover_window)
            api.ctl("churn", {"per_minute": 0})
            stats = api.stats()
            changes = int(stats["changes"])
            # Changes made near the end of the window get their full chance, and
            # more: a late one is then reported in the p99 rather than ending the run.
            # Two changes of one session between two reads make one notification.
            with contextlib.suppress(BenchError):
                wait_until(
                    lambda: int(api.stats()["hooks"]) >= changes,
                    2 * interval + 30,
                    "the last changes to be notified",
                )
            stats = api.stats()
    except BenchError as error:
        print(f"    failed: {error}")
        table.add(f"{count} discovered", f"failed: {error}", met=False)
        return
    finally:
        api.stop()
    share = window.cpu / window.seconds
    table.add(f"{count} discovered: CPU share of one core", f"{share:.1%}", "≤ 10%", share <= 0.10)
    table.add(
        f"{count} discovered: requests/min",
        f"{(window.gets + window.lists) / window.seconds * 60:.0f} "
        f"({window.lists} list pages, {window.gets} GETs in {window.seconds:.0f} s)",
    )
    latencies = stats["hook_latencies"]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    table.add(
        f"{count} discovered: change -> notification p50 / p99",
        f"{p50:.1f} s / {p99:.1f} s ({len(latencies)} of {changes} changes notified)",
        f"p99 ≤ {interval + 2:g} s",
        p99 <= interval + 2 and len(latencies) >= changes,
    )


def scenario_adaptive(opts: Options, table: Table) -> None:
    """Scenario 6: requests/hour for 1,000 sessions (5% running), adaptive vs fixed."""
    print("[6] adaptive: 1,000 sessions, 50 running; adaptive vs fixed 5 s")
    api = FakeApi(0)
    try:
        adaptive_ids = api.ctl("add", {"count": 1000, "prefix": "a-"})["ids"]
        fixed_ids = api.ctl("add", {"count": 1000, "prefix": "f-"})["ids"]
        api.ctl("status", {"ids": adaptive_ids[:50] + fixed_ids[:50], "status": "running"})
        adaptive = write_config(
            opts.workdir / "adaptive.yaml",
            api,
            opts.workdir / "adaptive.db",
            adaptive_ids,
            poll="  interval: 30s\n  running: 5s\n  pending: 10s\n  idle: 30s\n"
            "  max_idle: 10m\n  jitter: 10%\n",
            budget=1000,
        )
        accepted, said = config_accepted(adaptive)
        if not accepted:
            print(f"    not run: {NEEDS_ADAPTIVE}\n    check said: {said.splitlines()[-1]}")
            table.add("1,000 sessions, 5% running: requests/hour", f"not run: {NEEDS_ADAPTIVE}")
            return
        fixed = write_config(
            opts.workdir / "fixed.yaml",
            api,
            opts.workdir / "fixed.db",
            fixed_ids,
            poll="  interval: 5s\n  jitter: 10%\n",
            budget=1000,
        )
        with (
            running(Daemon(adaptive, opts.workdir / "adaptive.log")) as one,
            running(Daemon(fixed, opts.workdir / "fixed.log")) as two,
        ):
            api.ctl("reset")
            time.sleep(opts.adaptive_window)
            one.check_alive()
            two.check_alive()
            by_prefix = api.stats()["gets_by_prefix"]
    finally:
        api.stop()
    per_hour = 3600 / opts.adaptive_window
    a, f = by_prefix.get("a", 0) * per_hour, by_prefix.get("f", 0) * per_hour
    fewer = f / a if a else math.inf
    table.add(
        "1,000 sessions, 5% running: requests/hour adaptive vs fixed 5 s",
        f"{a:,.0f} vs {f:,.0f}: {fewer:.1f}x fewer (first {opts.adaptive_window:.0f} s "
        "after start, scaled to an hour)",
        "≥ 5x fewer",
        fewer >= 5,
    )


# --- main ------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="poll interval (s) of the cost run"
    )
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--bare-seconds", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--burst-interval", type=float, default=2.0)
    parser.add_argument(
        "--latency-sessions", type=int, default=3000, help="scenario 7: polled every 10 s"
    )
    parser.add_argument("--big", type=int, default=10000, help="sessions, scenarios 4-5")
    parser.add_argument("--discover-interval", type=float, default=20.0)
    parser.add_argument("--discover-window", type=float, default=60.0)
    parser.add_argument("--adaptive-window", type=float, default=90.0)
    parser.add_argument(
        "--only", default="1,3,4,7,5,6", help="scenarios: 1 (with 2), 3, 4, 5, 6, 7"
    )
    parser.add_argument(
        "--latency-concurrency", type=int, default=0, help="scenario 7: factory.concurrency"
    )
    parser.add_argument("--keep", action="store_true", help="keep configs, logs and databases")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    command = " ".join([Path(PY).name, "bench/poll_bench.py", *(argv or sys.argv[1:])])
    workdir = Path(tempfile.mkdtemp(prefix="poll-bench-"))
    opts = Options(
        sessions=args.sessions,
        interval=args.interval,
        window=args.window,
        bare_seconds=args.bare_seconds,
        burst=args.burst,
        burst_interval=args.burst_interval,
        latency_sessions=args.latency_sessions,
        latency_concurrency=args.latency_concurrency,
        big=args.big,
        discover_interval=args.discover_interval,
        discover_window=args.discover_window,
        adaptive_window=args.adaptive_window,
        workdir=workdir,
    )
    only = {part.strip() for part in args.only.split(",")}
    table = Table()
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        if "1" in only:
            scenario_cost(opts, table)
        if "3" in only:
            scenario_burst(opts, table)
        if "4" in only:
            scenario_memory(opts, table)
        if "7" in only:
            scenario_latency(opts, table)
        if "5" in only:
            scenario_discovery(opts, table)
        if "6" in only:
            scenario_adaptive(opts, table)
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            for path in sorted(workdir.glob("**/*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()
    load_after = os.getloadavg()
    print()
    print(f"command: {command}")
    print(
        f"machine: {os.cpu_count()} CPUs; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} (1 min); {time.monotonic() - started:.0f} s in all"
    )
    print()
    print(table.render())
    if table.missed:
        print(
            f"\n{len(table.missed)} target(s) missed: " + "; ".join(r.figure for r in table.missed)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
