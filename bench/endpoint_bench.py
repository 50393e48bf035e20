"""Endpoint benchmark: /metrics and /healthz latency of a busy daemon, and hostile clients.

A real `factory-watcher run` subprocess polls `--sessions` simulated sessions
(the simulator in a process of its own) every `--interval` seconds with the
endpoint on. Phases:

1. under load: `--requests` sequential GETs each of /metrics and /healthz;
   latency percentiles (client side, connect included).
2. hostile: `--slow` clients trickle a request head one line at a time
   (slowloris) and `--idle` more connect and send nothing; meanwhile the
   simulator's request counter shows whether polling kept its rate, and a
   legitimate /healthz is tried every 100 ms (answered or refused at the cap).
3. after: the same latency measurement once the hostile clients are gone.

Usage: .venv/bin/python bench/endpoint_bench.py [--sessions 2000] [--interval 5]
       [--requests 200] [--slow 64] [--idle 64] [--attack 12]
Prints figures; exit 0 when p99 of /metrics under load is below 100 ms and
polling kept at least 90% of its rate under attack, else 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "fk-bench-key"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def latencies(port: int, path: str, count: int) -> list[float]:
    """Milliseconds for `count` sequential GETs of `path`."""
    found = []
    for _ in range(count):
        started = time.perf_counter()
        status, _ = get(port, path)
        found.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    return found


def describe(name: str, values: list[float]) -> str:
    """One line of percentiles."""
    return (
        f"{name:<10} n={len(values):<4} p50={statistics.median(values):6.2f} ms  "
        f"p95={percentile(values, 95):6.2f} ms  p99={percentile(values, 99):6.2f} ms  "
        f"max={max(values):6.2f} ms"
    )


def sim_requests(sim_url: str) -> int:
    """Total API requests the simulator has answered."""
    host, port = sim_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/_sim/stats")
        return int(json.loads(conn.getresponse().read())["total_requests"])
    finally:
        conn.close()


def slowloris(port: int, stop: threading.Event) -> None:
    """Trickle a request head one header line every 200 ms; reconnect when dropped."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                while not stop.wait(0.2):
                    sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            stop.wait(0.05)


def idler(port: int, stop: threading.Event) -> None:
    """Connect and send nothing; reconnect when dropped."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.settimeout(1)
                while not stop.is_set():
                    try:
                        if sock.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
        except OSError:
            stop.wait(0.05)


def main() -> int:
    """Run the phases and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--idle", type=int, default=64)
    parser.add_argument("--attack", type=float, default=12.0, help="seconds of hostile clients")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="endpoint-bench-"))
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "FW_KEY": API_KEY}
    sim = subprocess.Popen(
        [sys.executable, "-m", "watcher.testing.sim", "--sessions", str(args.sessions),
         "--api-key", API_KEY],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert sim.stdout is not None
    sim_url = sim.stdout.readline().split()[-1]
    ids = [sim.stdout.readline().split()[-1] for _ in range(args.sessions)]
    config = work / "config.yaml"
    config.write_text(
        f"factory:\n  base_url: {sim_url}\n  api_key: ${{FW_KEY}}\n  concurrency: 16\n"
        f"poll:\n  interval: {args.interval:g}s\n  jitter: 10%\n"
        f"state:\n  path: {work / 'state.db'}\n"
        "http:\n  listen: 127.0.0.1:0\n"
        "sessions:\n" + "".join(f"  - id: {sid}\n" for sid in ids)
    )
    log = work / "daemon.log"
    with log.open("wb") as handle:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "watcher", "--log-level", "INFO", "run", "-c", str(config)],
            cwd=work, stdout=handle, stderr=handle, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            found = re.search(r"metrics and health on http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.1)
        assert port is not None, log.read_text()
        while get(port, "/readyz")[0] != 200:
            time.sleep(0.2)
        time.sleep(2 * args.interval)  # past the first round of polls: steady state
        print(
            f"daemon: {args.sessions} sessions every {args.interval:g}s "
            f"(~{args.sessions / args.interval:.0f} polls/s); endpoint on port {port}"
        )
        size = len(get(port, "/metrics")[1])
        print(f"/metrics body: {size} bytes")

        print("phase 1: under load")
        metrics_ms = latencies(port, "/metrics", args.requests)
        health_ms = latencies(port, "/healthz", args.requests)
        print("  " + describe("/metrics", metrics_ms))
        print("  " + describe("/healthz", health_ms))

        print(f"phase 2: {args.slow} slowloris + {args.idle} idle clients for {args.attack:g}s")
        base_start = sim_requests(sim_url)
        time.sleep(args.attack / 2)
        base_rate = (sim_requests(sim_url) - base_start) / (args.attack / 2)
        stop = threading.Event()
        threads = [
            threading.Thread(target=slowloris, args=(port, stop), daemon=True)
            for _ in range(args.slow)
        ] + [
            threading.Thread(target=idler, args=(port, stop), daemon=True) for _ in range(args.idle)
        ]
        for thread in threads:
            thread.start()
        attack_start, before = time.monotonic(), sim_requests(sim_url)
        answered, refused, tried = [], 0, 0
        while time.monotonic() - attack_start < args.attack:
            tried += 1
            started = time.perf_counter()
            try:
                status, _ = get(port, "/healthz", timeout=2)
                if status == 200:
                    answered.append((time.perf_counter() - started) * 1000)
            except (OSError, http.client.HTTPException):
                refused += 1
            time.sleep(0.1)
        attack_rate = (sim_requests(sim_url) - before) / (time.monotonic() - attack_start)
        stop.set()
        print(f"  polls/s before: {base_rate:.0f}, during: {attack_rate:.0f} "
              f"({100 * attack_rate / base_rate:.0f}%)")  # fmt: skip
        print(f"  legitimate /healthz during: {len(answered)}/{tried} answered, {refused} refused")
        if answered:
            print("  " + describe("/healthz", answered))
        for thread in threads:
            thread.join(timeout=10)

        print("phase 3: after")
        after_ms = latencies(port, "/metrics", args.requests)
        print("  " + describe("/metrics", after_ms))
        ok = percentile(metrics_ms, 99) < 100 and attack_rate >= 0.9 * base_rate
        print("result:", "ok" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        daemon.terminate()
        daemon.wait(30)
        sim.terminate()
        sim.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
