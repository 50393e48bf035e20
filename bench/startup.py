"""Start-up benchmark: how long `factory-watcher --help`, `check` and `outbox list` take.

Each command runs as its own process, the way a user or a unit's ExecStartPre
runs it, through the venv's `factory-watcher` entry point and through
`python -m watcher`, beside a bare `python -c pass` of the same interpreter.
Runs are interleaved (one run of every command per round) so that load from
other work on the machine falls on all of them alike; one warm-up round comes
first (bytecode caches, page cache) and is not counted. It prints the median
wall time of each command and its ratio to `python -c pass`.

`check` reads a temporary config (two sessions, three targets, two rules; the
secrets come from the environment). `outbox list` reads a temporary state
database holding 50 outbox rows, 10 of them dead.

Usage: .venv/bin/python bench/startup.py [--runs 15] [--limit 4.0]
Exit status: 0 when `--help` (both ways of starting it) takes at most `--limit`
times `python -c pass`, 1 when it takes longer, 2 when a command failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from watcher.core.diff import event_id
from watcher.core.model import Event, EventType, SessionRef
from watcher.core.rules import Route
from watcher.store import SqliteStore

CONFIG = """\
factory:
  api_key: ${{FW_BENCH_API_KEY}}
  session_url: https://app.factory.ai/sessions/{{id}}
poll:
  interval: 30s
  jitter: 10%
state:
  path: {state}
sessions:
  - id: 8f1c2a
    name: nightly-refactor
    labels: {{team: platform}}
  - id: 3b9e07
targets:
  team-slack:
    type: slack
    token: ${{FW_BENCH_SLACK_TOKEN}}
    channel: C0123ABCD
  ops:
    type: slack_webhook
    url: ${{FW_BENCH_SLACK_WEBHOOK_URL}}
  ci:
    type: webhook
    url: https://hooks.example.com/factory
    secret: ${{FW_BENCH_WEBHOOK_SECRET}}
rules:
  - name: finished
    on: session.status_changed
    when: {{from: running, to: idle}}
    notify: [team-slack, ci]
  - name: gone
    on: [session.archived, session.deleted]
    notify: ops
"""
ENV = {
    "FW_BENCH_API_KEY": "fk-bench-0123456789",
    "FW_BENCH_SLACK_TOKEN": "xoxb-bench-token",
    "FW_BENCH_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/BENCH",
    "FW_BENCH_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
BASELINE = "python -c pass"
JUDGED = ("factory-watcher --help", "python -m watcher --help")
OUTBOX_ROWS = 50
DEAD_ROWS = 10


@dataclass(frozen=True)
class Command:
    """One command line to time, under the name the table shows."""

    name: str
    argv: tuple[str, ...]


def fill_state(path: Path) -> None:
    """A state database with OUTBOX_ROWS outbox rows, DEAD_ROWS of them dead."""
    now = datetime.now(UTC)
    store = SqliteStore(path)
    try:
        events = [
            Event(
                id=event_id(f"bench-{n:03d}", EventType.STATUS_CHANGED, {"n": n}),
                type=EventType.STATUS_CHANGED,
                occurred_at=now,
                session=SessionRef(id=f"bench-{n:03d}", title="bench", status="idle"),
                data={"from": "running", "to": "idle"},
            )
            for n in range(OUTBOX_ROWS)
        ]
        store.record_events(events, [(e, Route(rule="finished", target="ci")) for e in events], now)
        for row in store.list_outbox()[:DEAD_ROWS]:
            store.mark_dead(row.id, now, "permanent failure: HTTP 410")
    finally:
        store.close()


def commands(python: str, entry: str, config: Path) -> list[Command]:
    """The baseline and each command, through the entry point and through `-m watcher`."""
    found = [Command(BASELINE, (python, "-c", "pass"))]
    for args in (("--help",), ("check", "-c", str(config)), ("outbox", "list", "-c", str(config))):
        short = " ".join(args[:2] if args[0] == "outbox" else args[:1])
        found.append(Command(f"factory-watcher {short}", (entry, *args)))
        found.append(Command(f"python -m watcher {short}", (python, "-m", "watcher", *args)))
    return found


def run_once(command: Command, env: dict[str, str], cwd: Path) -> float:
    """Seconds of wall time for one run; SystemExit(2) with its stderr if it fails."""
    start = time.perf_counter()
    done = subprocess.run(
        command.argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        print(f"{command.name}: exit {done.returncode}\n{done.stderr.decode()}", file=sys.stderr)
        raise SystemExit(2)
    return elapsed


def main() -> int:
    """Time every command; print the table; judge `--help` against the limit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="counted runs per command")
    parser.add_argument("--limit", type=float, default=4.0, help="--help / python -c pass")
    options = parser.parse_args()

    python = sys.executable
    entry = str(Path(python).with_name("factory-watcher"))
    if not Path(entry).exists():
        print(f"no entry point at {entry}; run `make .venv/.installed`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fw-startup-") as tmp:
        directory = Path(tmp)
        state = directory / "state.db"
        fill_state(state)
        config = directory / "config.yaml"
        config.write_text(CONFIG.format(state=state))
        config.chmod(0o600)
        env = {**os.environ, **ENV}
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        todo = commands(python, entry, config)
        times: dict[str, list[float]] = {c.name: [] for c in todo}
        for round_ in range(options.runs + 1):
            for command in todo:
                elapsed = run_once(command, env, directory)
                if round_ > 0:  # round 0 warms the caches
                    times[command.name].append(elapsed)

    medians = {name: statistics.median(runs) for name, runs in times.items()}
    base = medians[BASELINE]
    print(f"start-up time, median of {options.runs} interleaved runs ({python})")
    print(f"{'command':<32} {'median ms':>10} {'min ms':>8} {'runs':>5} {'x pass':>7}")
    for name, runs in times.items():
        print(
            f"{name:<32} {medians[name] * 1000:>10.1f} {min(runs) * 1000:>8.1f} "
            f"{len(runs):>5} {medians[name] / base:>7.2f}"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = [name for name in JUDGED if medians[name] > options.limit * base]
    for name in JUDGED:
        verdict = "MISSED" if name in failed else "met"
        print(f"target: {name} <= {options.limit:g} x {BASELINE}: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
