"""`make ha`: three replicas on one PostgreSQL; the leader killed, stopped and cut off.

Is every notification delivered, duplicates bounded, and never two leaders at once?

Everything runs on 127.0.0.1:

- a scratch database on the local PostgreSQL (`FACTORY_WATCHER_TEST_PG`, default
  postgresql://postgres@127.0.0.1:5432/postgres), created for the run and dropped after;
- the simulator (`python -m watcher.testing.sim`) in its own process, driven through
  its `/_sim/` routes by a storm thread: `--sessions` sessions started, finished and
  interrupted at `--rate` transitions a second for the whole run;
- a `WebhookReceiver` (watcher/testing/sinks.py) in this process, counting deliveries
  by event id (the webhook body's `id`), with each session's `sequence`; it holds
  each answer `--hold` seconds after counting it, so that sends are in flight when
  a leader dies (the duplicates a takeover may cause);
- `--replicas` replicas: `python -m watcher run`, the production command, each with
  the same `state.url` (its own `application_name`) and an `http:` endpoint whose
  `/metrics` this harness reads every 100 ms (`factory_watcher_leader`) to know the
  leader and to catch two leaders at once.

Then, with the storm going: the leader killed with SIGKILL `--kills` times (restarted
each time), one SIGTERM handover, one SIGSTOP past the lease (then SIGCONT), and one
cut of the leader's database connections (`pg_terminate_backend` on its backends,
found by `application_name` and by its sockets' client ports). At the end the storm
stops, the outbox drains, and the notifications recorded in the database are
compared with the deliveries. One line sums it up:

    lost= duplicates= failovers= takeover_p50= takeover_max= handover_s= fenced_writes= overlap=

followed by a breakdown. Exit status: 0 when every limit holds; 1 when one is missed
(lost > 0, more than 2 duplicates per failover, any overlap, a takeover over 15 s, a
handover over 2 s, the paused leader not reporting 0 within 10 s of resuming); 2 when
the run itself failed (no PostgreSQL, a replica that never serves /metrics, Ctrl-C).

    python bench/ha.py [--kills 5] [--sessions 30] [--rate 4] [--hold 0.3] [--lease-ttl 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python bench/ha.py`: bench.common is under the root

from bench.common import (  # noqa: E402
    BenchError,
    Child,
    Stopped,
    config_accepted,
    free_port,
    parse_metrics,
    stop_process,
)

PY = sys.executable
API_KEY = "fk-ha-bench-key-0000"
ADMIN_URL = os.environ.get(
    "FACTORY_WATCHER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SCRAPE_EVERY = 0.1  # seconds between sweeps of every replica's /metrics
SCRAPE_TIMEOUT = 0.3  # a stopped replica accepts the connection and never answers
LEADER = "factory_watcher_leader"
COUNTERS = {
    "fenced_writes": "factory_watcher_fenced_writes_total",
    "rows_requeued": "factory_watcher_rows_requeued_total",
    "renew_failures": "factory_watcher_lease_renew_failures_total",
    "leadership_changes": "factory_watcher_leadership_changes_total",
}
SINK = "sink"


@dataclass(frozen=True, slots=True)
class Limits:
    """What the issue's "done" asks of a run."""

    takeover_s: float = 15.0
    handover_s: float = 2.0
    resume_s: float = 10.0  # a paused leader reports 0 within this of SIGCONT
    duplicates_per_failover: int = 2


class HarnessError(BenchError):
    """The run itself failed: a process did not start, no leader, no database."""


# --- pure: metrics text, sweeps, the ledger, the verdict -----------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One replica's /metrics at one sweep; `metrics` None: it did not answer in time."""

    replica: str
    instance: int  # which start of the replica (counters restart with the process)
    metrics: Mapping[str, float] | None

    @property
    def leads(self) -> bool:
        """Whether the replica said `factory_watcher_leader 1`."""
        return self.metrics is not None and self.metrics.get(LEADER) == 1.0


@dataclass(frozen=True, slots=True)
class Sweep:
    """Every replica's reading, all asked at once at `at` (harness monotonic seconds)."""

    at: float
    readings: tuple[Reading, ...]

    @property
    def leaders(self) -> frozenset[str]:
        """The replicas that said they lead."""
        return frozenset(r.replica for r in self.readings if r.leads)

    def reading(self, replica: str) -> Reading | None:
        """The reading of `replica` in this sweep, if it was asked."""
        return next((r for r in self.readings if r.replica == replica), None)


@dataclass(frozen=True, slots=True)
class Overlap:
    """Consecutive sweeps in which more than one replica said it leads."""

    start: float
    end: float
    replicas: frozenset[str]
    sweeps: int


def overlaps(sweeps: Sequence[Sweep]) -> list[Overlap]:
    """Every run of sweeps with two or more leaders, merged while it lasts."""
    found: list[Overlap] = []
    current: Overlap | None = None
    for sweep in sweeps:
        leaders = sweep.leaders
        if len(leaders) > 1:
            if current is None:
                current = Overlap(sweep.at, sweep.at, leaders, 1)
            else:
                current = Overlap(
                    current.start, sweep.at, current.replicas | leaders, current.sweeps + 1
                )
        elif current is not None:
            found.append(current)
            current = None
    if current is not None:
        found.append(current)
    return found


def counter_totals(sweeps: Sequence[Sweep]) -> dict[str, float]:
    """Each counter summed over every process that ran (its last reading each)."""
    last: dict[tuple[str, int], Mapping[str, float]] = {}
    for sweep in sweeps:
        for reading in sweep.readings:
            if reading.metrics is not None:
                last[(reading.replica, reading.instance)] = reading.metrics
    return {
        key: sum(metrics.get(name, 0.0) for metrics in last.values())
        for key, name in COUNTERS.items()
    }


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook the receiver got: the event id, its session and sequence."""

    event_id: str
    session_id: str | None
    sequence: int | None
    at: float


@dataclass(frozen=True, slots=True)
class Tally:
    """The notifications recorded in the database against the deliveries."""

    recorded: int
    delivered: int  # distinct recorded event ids received
    lost: tuple[str, ...]  # recorded, never received
    duplicates: int  # receipts beyond the first, summed
    duplicated: Mapping[str, int]  # event id -> receipts, where more than one
    unknown: tuple[str, ...]  # received, never recorded
    dead: tuple[str, ...]  # recorded and given up on
    reordered: int  # a session's delivery older than one it already had


def tally(recorded: Mapping[str, str], received: Sequence[Delivery]) -> Tally:
    """Compare `recorded` (event id -> outbox status) with `received` (in arrival order)."""
    counts = Counter(d.event_id for d in received)
    seen: set[str] = set()
    newest: dict[str, int] = {}
    reordered = 0
    for delivery in received:
        if delivery.event_id in seen:
            continue  # a duplicate, counted as such
        seen.add(delivery.event_id)
        if delivery.session_id is None or delivery.sequence is None:
            continue
        top = newest.get(delivery.session_id)
        if top is not None and delivery.sequence < top:
            reordered += 1
        newest[delivery.session_id] = max(delivery.sequence, top or delivery.sequence)
    return Tally(
        recorded=len(recorded),
        delivered=sum(1 for e in recorded if counts[e]),
        lost=tuple(sorted(e for e in recorded if not counts[e])),
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        duplicated={e: n for e, n in sorted(counts.items()) if n > 1},
        unknown=tuple(sorted(e for e in counts if e not in recorded)),
        dead=tuple(sorted(e for e, status in recorded.items() if status == "dead")),
        reordered=reordered,
    )


class Kind(StrEnum):
    """What was done to the leader."""

    KILL = "SIGKILL"
    TERM = "SIGTERM handover"
    PAUSE = "SIGSTOP past the lease"
    CUT = "database connections cut"


@dataclass(frozen=True, slots=True)
class Failure:
    """One thing done to the leader, and what followed.

    `took`: seconds from the act to another replica leading (None: none did in
    time, or, for a cut, the leader kept its lease); `changed`: whether the
    leadership moved.
    """

    kind: Kind
    victim: str
    took: float | None
    changed: bool
    note: str = ""

    def describe(self) -> str:
        """One line: what was done, whether the leadership moved, how fast."""
        moved = "moved" if self.changed else "kept"
        note = f" ({self.note})" if self.note else ""
        return (
            f"{self.kind} of {self.victim}: leadership {moved}, "
            f"new leader after {_s(self.took)}{note}"
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything the verdict is drawn from."""

    failures: tuple[Failure, ...]
    tally: Tally
    overlaps: tuple[Overlap, ...]
    resumed_zero_after: float | None  # SIGCONT -> the paused replica said 0
    counters: Mapping[str, float]
    sweeps: int = 0  # how many times every replica's /metrics was read
    transitions: int = 0  # what the storm did on the simulator

    @property
    def failovers(self) -> int:
        """How many times the leadership moved."""
        return sum(1 for f in self.failures if f.changed)

    @property
    def takeovers(self) -> list[float]:
        """Seconds to a new leader after each unannounced failure (not the handover)."""
        return [f.took for f in self.failures if f.kind is not Kind.TERM and f.took is not None]

    @property
    def handover(self) -> float | None:
        """Seconds to a new leader after SIGTERM."""
        return next((f.took for f in self.failures if f.kind is Kind.TERM), None)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def summary_line(outcome: Outcome) -> str:
    """The one line a reader compares across runs."""
    takeovers = outcome.takeovers
    p50 = statistics.median(takeovers) if takeovers else None
    return (
        f"lost={len(outcome.tally.lost)} duplicates={outcome.tally.duplicates} "
        f"failovers={outcome.failovers} takeover_p50={_s(p50)} "
        f"takeover_max={_s(max(takeovers) if takeovers else None)} "
        f"handover_s={_s(outcome.handover)} "
        f"fenced_writes={outcome.counters.get('fenced_writes', 0):.0f} "
        f"overlap={len(outcome.overlaps)}"
    )


def missed(outcome: Outcome, limits: Limits) -> list[str]:
    """Every limit the run missed, in words (empty: all held)."""
    found: list[str] = []
    result = outcome.tally
    if result.lost:
        found.append(f"{len(result.lost)} notification(s) lost: {', '.join(result.lost[:5])}")
    allowed = limits.duplicates_per_failover * outcome.failovers
    if result.duplicates > allowed:
        found.append(
            f"{result.duplicates} duplicate(s), more than {limits.duplicates_per_failover} "
            f"for each of {outcome.failovers} failover(s)"
        )
    for overlap in outcome.overlaps:
        found.append(
            f"two leaders at once ({', '.join(sorted(overlap.replicas))}) in "
            f"{overlap.sweeps} sweep(s) over {overlap.end - overlap.start:.1f}s"
        )
    for failure in outcome.failures:
        if failure.kind is Kind.CUT and not failure.changed:
            continue  # the leader kept its lease through the cut: nothing to take over
        if failure.took is None:
            found.append(f"no replica took over after {failure.kind} of {failure.victim}")
        elif failure.kind is Kind.TERM and failure.took > limits.handover_s:
            found.append(f"the SIGTERM handover took {failure.took:.1f}s (> {limits.handover_s}s)")
        elif failure.kind is not Kind.TERM and failure.took > limits.takeover_s:
            found.append(
                f"takeover after {failure.kind} of {failure.victim} took {failure.took:.1f}s "
                f"(> {limits.takeover_s}s)"
            )
    if any(f.kind is Kind.PAUSE for f in outcome.failures):
        after = outcome.resumed_zero_after
        if after is None or after > limits.resume_s:
            shown = "never" if after is None else f"after {after:.1f}s"
            found.append(f"the paused leader reported 0 {shown} (limit {limits.resume_s}s)")
    return found


def breakdown(outcome: Outcome) -> list[str]:
    """The readable detail under the summary line."""
    result = outcome.tally
    lines = [
        f"notifications: {result.recorded} recorded, {result.delivered} delivered, "
        f"{len(result.lost)} lost, {result.duplicates} duplicate receipt(s) "
        f"({len(result.duplicated)} event(s)), {len(result.dead)} dead, "
        f"{len(result.unknown)} received but not recorded, {result.reordered} out of order",
    ]
    lines.append(
        f"{outcome.transitions} transition(s) driven on the simulator (those begun and ended "
        "inside a takeover gap are never seen by any poll); "
        f"{outcome.sweeps} sweeps of every replica's /metrics"
    )
    lines += [f"  {failure.describe()}" for failure in outcome.failures]
    counters = outcome.counters
    lines.append(
        "counters over every process: "
        + ", ".join(f"{key} {counters.get(key, 0):.0f}" for key in COUNTERS)
    )
    if outcome.resumed_zero_after is not None:
        lines.append(f"paused leader said 0 {outcome.resumed_zero_after:.1f}s after SIGCONT")
    for event_id, count in list(result.duplicated.items())[:10]:
        lines.append(f"  duplicate: {event_id} received {count} times")
    for event_id in result.lost[:10]:
        lines.append(f"  lost: {event_id}")
    return lines


# --- PostgreSQL: the scratch database, the outbox, a replica's backends -------------------


def libpq_url(admin: str, database: str, application: str | None = None) -> str:
    """A postgresql:// URL for `database` on the server of `admin` (a URL or key=value)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(admin)
    user = quote(str(params.get("user", "postgres")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@"
    host = str(params.get("host", "127.0.0.1"))
    port = str(params.get("port", "5432"))
    tail = f"?application_name={quote(application, safe='')}" if application else ""
    return f"postgresql://{auth}{host}:{port}/{quote(database, safe='')}{tail}"


@contextlib.contextmanager
def scratch_database(admin: str, keep: bool) -> Iterator[str]:
    """A new empty database, by name; dropped on exit unless `keep`."""
    import psycopg
    from psycopg import sql

    name = f"fw_ha_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise HarnessError(f"no PostgreSQL to create a scratch database on: {error}") from None
    try:
        yield name
    finally:
        if keep:
            print(f"kept database {name}", flush=True)
        else:
            with psycopg.connect(admin, autocommit=True) as db:
                db.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def parse_proc_tcp(text: str) -> list[tuple[int, int, int]]:
    """`/proc/net/tcp{,6}` rows as (local port, remote port, socket inode)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, remote, inode = fields[1], fields[2], fields[9]
        rows.append(
            (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), int(inode))
        )
    return rows


def client_ports(pid: int, server_port: int) -> set[int]:
    """The local ports of `pid`'s TCP connections to `server_port` (its database sessions)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for local, remote, inode in parse_proc_tcp(handle.read()):
                if remote == server_port and inode in inodes:
                    ports.add(local)
    return ports


class Database:
    """The harness's own view of the scratch database (autocommit, short statements)."""

    def __init__(self, url: str, name: str, server_port: int) -> None:
        import psycopg

        self.name = name
        self.server_port = server_port
        self._db = psycopg.connect(url, autocommit=True)

    def cut(self, application: str, pid: int) -> int:
        """Terminate every backend of one replica (found by its pool's application_name,
        its lease connection's holder name with the pid, or its sockets); how many."""
        ports = sorted(client_ports(pid, self.server_port))
        rows = self._db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND (application_name = %s OR application_name LIKE %s OR client_port = ANY(%s))",
            # The lease connection is named after its holder, host:pid:random.
            (self.name, application, f"%:{pid}:%", ports),
        ).fetchall()
        return sum(1 for (done,) in rows if done)

    def pending(self) -> int:
        """Notifications not yet delivered nor given up on."""
        row = self._db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
        return int(row[0]) if row else 0

    def recorded(self) -> dict[str, str]:
        """Every notification for the sink: event id -> status."""
        rows = self._db.execute(
            "SELECT event_id, status FROM outbox WHERE target = %s", (SINK,)
        ).fetchall()
        return {str(event_id): str(status) for event_id, status in rows}

    def lease(self) -> tuple[str, int] | None:
        """The lease's holder and epoch, if any."""
        row = self._db.execute(
            "SELECT holder, epoch FROM leader_lease WHERE name = 'leader'"
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


# --- processes ---------------------------------------------------------------------------


class Simulator(Child):
    """`python -m watcher.testing.sim` in its own process, and its `/_sim/` routes."""

    def __init__(self) -> None:
        cmd = [PY, "-m", "watcher.testing.sim", "--port", "0", "--sessions", "0"]
        super().__init__([*cmd, "--api-key", API_KEY], "simulator")
        self.http = httpx.Client(base_url=self.url, timeout=5, trust_env=False)

    def create(self, session_id: str) -> None:
        """A new idle session."""
        body = {"session_id": session_id, "title": f"ha {session_id}", "status": "idle"}
        self.http.post("/_sim/sessions", json=body).raise_for_status()

    def act(self, session_id: str, action: str) -> None:
        """`start`, `complete` or `interrupt` one session."""
        self.http.post(f"/_sim/sessions/{session_id}/{action}").raise_for_status()

    def stop(self) -> None:
        """Stop the simulator."""
        self.http.close()
        super().stop()


class Storm:
    """A thread making transitions on the simulator at `rate` a second until stopped.

    Each session alternates start and finish (one in ten interrupted instead),
    a run lasting at least `min_run` seconds so that the leader's polls see
    every transition.
    """

    def __init__(self, sim: Simulator, sessions: Sequence[str], rate: float, seed: int) -> None:
        self.sim = sim
        self.sessions = list(sessions)
        self.rate = rate
        self.min_run = 3.0
        self.rng = random.Random(seed)
        self.actions: Counter[str] = Counter()
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm", daemon=True)

    def start(self) -> None:
        """Begin the storm."""
        self._thread.start()

    def stop(self) -> None:
        """End the storm and wait for its thread."""
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        running: dict[str, float] = {}
        while not self._stop.wait(1 / self.rate):
            now = time.monotonic()
            sid = self.rng.choice(self.sessions)
            if sid not in running:
                action = "start"
            elif now - running[sid] >= self.min_run:
                action = "interrupt" if self.rng.random() < 0.1 else "complete"
            else:
                continue
            try:
                self.sim.act(sid, action)
            except httpx.HTTPError:
                self.failed += 1
                continue
            self.actions[action] += 1
            if action == "start":
                running[sid] = now
            else:
                del running[sid]


class Replica:
    """One `python -m watcher run` with its own config; restarted as a new instance."""

    def __init__(self, name: str, config: Path, port: int, log: Path) -> None:
        self.name = name
        self.config = config
        self.port = port
        self.log = log
        self.instance = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def application(self) -> str:
        """Its `application_name` on the database."""
        return f"fw-ha-{self.name}"

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start (again): a new instance, its log appended to the replica's file."""
        self.instance += 1
        with self.log.open("ab") as log:
            log.write(f"--- instance {self.instance}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [PY, "-m", "watcher", "--log-level", "INFO", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_PROXY": "127.0.0.1"},
            )

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the process."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """Its exit status once it exited within `timeout`, else None."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def exited(self) -> int | None:
        """Its exit status if it has exited."""
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 20 s."""
        if self.proc is not None:
            stop_process(self.proc, 20)

    def tail(self, characters: int = 1500) -> str:
        """The end of its log."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-characters:]
        return ""


def write_config(
    path: Path,
    *,
    sim: str,
    sink: str,
    url: str,
    port: int,
    sessions: Sequence[str],
    ttl: str,
    renew: str,
) -> Path:
    """One replica's config: the simulator, the PostgreSQL state, one webhook target."""
    lines = [
        "factory:",
        f"  base_url: {sim}",
        f"  api_key: {API_KEY}",
        "  timeout: 5s",
        "  max_requests_per_second: 500",
        "poll:",
        "  interval: 1s",
        "  jitter: 10%",
        "state:",
        f"  url: {url}",
        f"  lease_ttl: {ttl}",
        f"  renew_every: {renew}",
        "http:",
        f"  listen: 127.0.0.1:{port}",
        "targets:",
        f"  {SINK}:",
        "    type: webhook",
        f"    url: {sink}/hook",
        "rules:",
        "  - name: runs",
        "    on: [session.started, session.finished, session.interrupted]",
        f"    notify: {SINK}",
        "sessions:",
        *(f"  - id: {sid}" for sid in sessions),
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # the API key is written literally
    return path


# --- watching: the receiver and the scraper -----------------------------------------------


class Deliveries:
    """What the webhook receiver got, in arrival order (filled from its request threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, hold: float = 0.0) -> None:
        self._clock = clock
        # Seconds each answer is held after the body is counted: sends in flight at a kill.
        self._hold = hold
        self._lock = threading.Lock()
        self._items: list[Delivery] = []

    def on_body(self, body: Any) -> None:
        """Record one webhook body (a dict with `id`, `sequence`, `session.id`)."""
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return
        session = body.get("session")
        sequence = body.get("sequence")
        delivery = Delivery(
            event_id=body["id"],
            session_id=session.get("id") if isinstance(session, dict) else None,
            sequence=sequence if isinstance(sequence, int) else None,
            at=self._clock(),
        )
        with self._lock:
            self._items.append(delivery)
        if self._hold:
            time.sleep(self._hold)  # the request thread: the sender waits for its answer

    def items(self) -> list[Delivery]:
        """Every delivery so far (a copy)."""
        with self._lock:
            return list(self._items)

    def last_at(self) -> float | None:
        """When the newest delivery came."""
        with self._lock:
            return self._items[-1].at if self._items else None


class Scraper:
    """A thread reading every replica's /metrics at once, every `every` seconds."""

    def __init__(
        self,
        replicas: Sequence[Replica],
        every: float = SCRAPE_EVERY,
        fetch: Callable[[str], str | None] | None = None,
    ) -> None:
        self.replicas = list(replicas)
        self.every = every
        self._client = httpx.Client(timeout=SCRAPE_TIMEOUT, trust_env=False)
        self._fetch = fetch or self._get
        self._pool = ThreadPoolExecutor(max_workers=len(self.replicas))
        self._lock = threading.Lock()
        self._sweeps: list[Sweep] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def _get(self, url: str) -> str | None:
        try:
            response = self._client.get(url)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    def sweep(self) -> Sweep:
        """Ask every replica now, all at once, and keep the answers."""
        at = time.monotonic()
        asked = [(r.name, r.instance, f"http://127.0.0.1:{r.port}/metrics") for r in self.replicas]
        texts = list(self._pool.map(lambda item: self._fetch(item[2]), asked))
        sweep = Sweep(
            at,
            tuple(
                Reading(name, instance, None if text is None else parse_metrics(text))
                for (name, instance, _), text in zip(asked, texts, strict=True)
            ),
        )
        with self._lock:
            self._sweeps.append(sweep)
        return sweep

    def start(self) -> None:
        """Begin sweeping in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pool.shutdown(wait=True)
        self._client.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.sweep()
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sweeps(self, since: float = float("-inf")) -> list[Sweep]:
        """The sweeps taken at or after `since`."""
        with self._lock:
            return [s for s in self._sweeps if s.at >= since]

    def wait_for(self, what: str, test: Callable[[Sweep], bool], timeout: float) -> Sweep:
        """The first new sweep passing `test`; HarnessError after `timeout` seconds."""
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            for sweep in self.sweeps(since):
                if test(sweep):
                    return sweep
            time.sleep(self.every / 2)
        raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the run ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What the run is asked to do."""

    replicas: int = 3
    kills: int = 5
    sessions: int = 30
    rate: float = 4.0  # storm transitions a second
    hold: float = 0.3  # seconds the receiver holds each answer (sends in flight at a kill)
    ttl: float = 10.0  # seconds
    renew: float = 2.0
    warmup: float = 5.0  # storm before the first failure
    settle: float = 3.0  # after each restart, before the next failure
    seed: int = 17
    keep: bool = False


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


@dataclass
class Run:
    """One run of the harness: processes, watchers and the failures done to the leader."""

    plan: Plan
    workdir: Path
    admin: str = ADMIN_URL
    replicas: list[Replica] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    _scraper: Scraper | None = None

    @property
    def scraper(self) -> Scraper:
        """The /metrics sweeper (started with the replicas)."""
        assert self._scraper is not None
        return self._scraper

    def execute(self) -> Outcome:
        """Set everything up, do every failure during the storm, drain, and tally."""
        from psycopg.conninfo import conninfo_to_dict

        from watcher.testing.sinks import WebhookReceiver

        plan = self.plan
        deliveries = Deliveries(hold=plan.hold)
        with contextlib.ExitStack() as stack:
            name = stack.enter_context(scratch_database(self.admin, plan.keep))
            sim = Simulator()
            stack.callback(sim.stop)
            receiver = stack.enter_context(
                WebhookReceiver(on_message=lambda message: deliveries.on_body(message.json))
            )
            sessions = [f"ha-{i:02d}" for i in range(plan.sessions)]
            for session_id in sessions:
                sim.create(session_id)
            for index in range(plan.replicas):
                replica = Replica(
                    f"r{index + 1}", Path(), free_port(), self.workdir / f"r{index + 1}.log"
                )
                replica.config = write_config(
                    self.workdir / f"{replica.name}.yaml",
                    sim=sim.url,
                    sink=receiver.url,
                    url=libpq_url(self.admin, name, replica.application),
                    port=replica.port,
                    sessions=sessions,
                    ttl=_duration(plan.ttl),
                    renew=_duration(plan.renew),
                )
                self.replicas.append(replica)
            self.check_config(self.replicas[0].config)
            stack.callback(self.stop_replicas)
            for replica in self.replicas:
                replica.start()
            self._scraper = Scraper(self.replicas)
            self.scraper.start()
            stack.callback(self.scraper.stop)
            self.scraper.wait_for(
                "one leader among replicas that all serve factory_watcher_leader "
                "(is this build HA-capable? see the replica logs)",
                lambda s: (
                    len(s.leaders) == 1
                    and all(r.metrics is not None and LEADER in r.metrics for r in s.readings)
                ),
                90,
            )
            server_port = int(conninfo_to_dict(self.admin).get("port") or 5432)
            database = Database(libpq_url(self.admin, name), name, server_port)
            stack.callback(database.close)
            storm = Storm(sim, sessions, plan.rate, plan.seed)
            storm.start()
            stack.callback(storm.stop)
            time.sleep(plan.warmup)
            failures: list[Failure] = []
            for number in range(plan.kills):
                failures.append(self.kill(self.leader()))
                print(f"kill {number + 1}/{plan.kills}: {failures[-1].describe()}", flush=True)
            failures.append(self.handover(self.leader()))
            print(failures[-1].describe(), flush=True)
            paused, resumed_zero_after = self.pause(self.leader())
            failures.append(paused)
            print(f"{paused.describe()}; said 0 {_s(resumed_zero_after)} after SIGCONT", flush=True)
            failures.append(self.cut(self.leader(), database))
            print(failures[-1].describe(), flush=True)
            storm.stop()
            print(
                f"storm: {dict(storm.actions)} ({storm.failed} control call(s) failed)", flush=True
            )
            self.drain(database, deliveries)
            sweeps = self.scraper.sweeps()
            return Outcome(
                failures=tuple(failures),
                tally=tally(database.recorded(), deliveries.items()),
                overlaps=tuple(overlaps(sweeps)),
                resumed_zero_after=resumed_zero_after,
                counters=counter_totals(sweeps),
                sweeps=len(sweeps),
                transitions=sum(storm.actions.values()),
            )
        raise AssertionError("unreachable")  # the with block returns or raises

    def check_config(self, config: Path) -> None:
        """`factory-watcher check` must accept the replicas' config."""
        accepted, said = config_accepted(config)
        if not accepted:
            raise HarnessError(f"the replicas' config is refused:\n{said}")

    def stop_replicas(self) -> None:
        """Stop every replica (those still running)."""
        for replica in self.replicas:
            replica.stop()

    def watch_exits(self, expected: Replica | None = None) -> None:
        """Note and restart a replica that exited without being told to."""
        for replica in self.replicas:
            code = replica.exited()
            if replica is not expected and code is not None:
                self.crashes.append(
                    f"replica {replica.name} exited by itself with {code}:\n{replica.tail()}"
                )
                replica.start()

    def leader(self) -> Replica:
        """The replica that leads now (a sweep with exactly one leader)."""
        self.watch_exits()
        sweep = self.scraper.wait_for("a leader", lambda s: len(s.leaders) == 1, 60)
        (name,) = sweep.leaders
        return next(r for r in self.replicas if r.name == name)

    def takeover(self, since: float, victim: Replica, timeout: float) -> float | None:
        """Seconds from `since` to a sweep showing one leader other than `victim`."""
        try:
            sweep = self.scraper.wait_for(
                f"a leader other than {victim.name}",
                lambda s: s.at >= since and len(s.leaders) == 1 and victim.name not in s.leaders,
                timeout,
            )
        except HarnessError:
            return None
        return sweep.at - since

    def restart(self, replica: Replica) -> None:
        """Start `replica` again, wait for it to answer as a standby, then let things settle."""
        replica.start()
        self.scraper.wait_for(
            f"{replica.name} to answer /metrics again",
            lambda s: (
                (r := s.reading(replica.name)) is not None
                and r.instance == replica.instance
                and r.metrics is not None
                and LEADER in r.metrics
            ),
            60,
        )
        time.sleep(self.plan.settle)

    def kill(self, victim: Replica) -> Failure:
        """SIGKILL the leader; how long until another leads; restart it."""
        since = time.monotonic()
        victim.signal(signal.SIGKILL)
        victim.wait(10)
        took = self.takeover(since, victim, self.plan.ttl + 20)
        self.restart(victim)
        return Failure(Kind.KILL, victim.name, took, took is not None)

    def handover(self, victim: Replica) -> Failure:
        """SIGTERM the leader: it resigns; how long until another leads; restart it."""
        since = time.monotonic()
        victim.signal(signal.SIGTERM)
        took = self.takeover(since, victim, self.plan.ttl + 20)
        code = victim.wait(30)
        note = f"exit status {code}" if code is not None else "did not exit within 30s"
        if code is None:
            victim.signal(signal.SIGKILL)
            victim.wait(10)
        self.restart(victim)
        return Failure(Kind.TERM, victim.name, took, took is not None, note)

    def pause(self, victim: Replica) -> tuple[Failure, float | None]:
        """SIGSTOP the leader past its lease, SIGCONT; the takeover and when it said 0."""
        since = time.monotonic()
        victim.signal(signal.SIGSTOP)
        took = self.takeover(since, victim, self.plan.ttl + 20)
        # Past the lease for certain, whatever the takeover took.
        time.sleep(max(0.0, since + self.plan.ttl + 2 - time.monotonic()))
        resumed = time.monotonic()
        victim.signal(signal.SIGCONT)
        try:
            sweep = self.scraper.wait_for(
                f"{victim.name} to say it no longer leads",
                lambda s: (
                    s.at >= resumed
                    and (r := s.reading(victim.name)) is not None
                    and r.metrics is not None
                    and r.metrics.get(LEADER) == 0.0
                ),
                30,
            )
            zero_after: float | None = sweep.at - resumed
        except HarnessError:
            zero_after = None
        time.sleep(self.plan.settle)
        return Failure(Kind.PAUSE, victim.name, took, took is not None), zero_after

    def cut(self, victim: Replica, database: Database) -> Failure:
        """Terminate the leader's database sessions; does it step down, and who leads then?"""
        since = time.monotonic()
        cut = database.cut(victim.application, victim.pid)
        if cut == 0:
            return Failure(Kind.CUT, victim.name, None, False, "no backend of the leader found")
        time.sleep(self.plan.ttl + 5)
        sweeps = self.scraper.sweeps(since)
        stepped = next((s.at for s in sweeps if s.leaders != {victim.name}), None)
        if stepped is None:
            return Failure(
                Kind.CUT, victim.name, None, False, f"{cut} backend(s) terminated; kept its lease"
            )
        back = next((s for s in sweeps if s.at >= stepped and len(s.leaders) == 1), None)
        took = None if back is None else back.at - since
        who = "" if back is None else f"; {', '.join(back.leaders)} leads"
        return Failure(Kind.CUT, victim.name, took, True, f"{cut} backend(s) terminated{who}")

    def drain(self, database: Database, deliveries: Deliveries, timeout: float = 120) -> None:
        """Wait for the outbox to empty and the receiver to go quiet for 3 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch_exits()
            last = deliveries.last_at()
            quiet = last is None or time.monotonic() - last > 3
            if quiet and database.pending() == 0:
                return
            time.sleep(0.5)
        print(f"the outbox did not drain within {timeout:.0f}s", flush=True)


def _on_signal(signum: int, frame: object) -> None:
    raise Stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; 0 when every limit holds, 1 when one is missed, 2 when it failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--rate", type=float, default=4.0, help="storm transitions a second")
    parser.add_argument(
        "--hold", type=float, default=0.3, help="seconds the receiver takes to answer each send"
    )
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="seconds")
    parser.add_argument("--renew-every", type=float, default=2.0, help="seconds")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    plan = Plan(
        replicas=args.replicas,
        kills=args.kills,
        sessions=args.sessions,
        rate=args.rate,
        hold=args.hold,
        ttl=args.lease_ttl,
        renew=args.renew_every,
        seed=args.seed,
        keep=args.keep,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="fw-ha-"))
    run = Run(plan, workdir)
    try:
        outcome = run.execute()
    except BenchError as error:  # HarnessError, or a helper process that did not start
        print(f"ha: {error}\n(logs in {workdir})", file=sys.stderr)
        for replica in run.replicas:
            print(f"--- {replica.name}:\n{replica.tail()}", file=sys.stderr)
        return 2
    except Stopped:
        print(f"ha: stopped (logs in {workdir})", file=sys.stderr)
        return 2
    print(summary_line(outcome))
    for line in breakdown(outcome):
        print(line)
    problems = missed(outcome, Limits()) + run.crashes
    for problem in problems:
        print(f"missed: {problem}")
    if problems or plan.keep:
        print(f"logs in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
