"""The failover harness's parts (`bench/ha.py`) that run alone: metrics, sweeps, the tally,
the verdict, the counting receiver, the scraper, and finding and cutting a client's backends."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest

from bench.ha import (
    Database,
    Deliveries,
    Delivery,
    Failure,
    Kind,
    Limits,
    Outcome,
    Overlap,
    Reading,
    Replica,
    Scraper,
    Sweep,
    Tally,
    client_ports,
    counter_totals,
    libpq_url,
    missed,
    overlaps,
    parse_metrics,
    parse_proc_tcp,
    summary_line,
    tally,
)
from tests.postgres import ADMIN_URL, scratch_database
from watcher.testing.sinks import WebhookReceiver

METRICS = """\
# HELP factory_watcher_leader 1 on the leader
# TYPE factory_watcher_leader gauge
factory_watcher_leader 1.0
factory_watcher_lease_epoch 7.0
factory_watcher_leadership_changes_total{reason="acquired"} 3.0
factory_watcher_leadership_changes_total{reason="fenced"} 1.0
factory_watcher_fenced_writes_total 2.0
garbage line
"""


def test_metrics_text_is_summed_by_name_and_kept_per_series() -> None:
    """Comments and garbage are skipped; labelled series sum under their name."""
    found = parse_metrics(METRICS)
    assert found["factory_watcher_leader"] == 1.0
    assert found["factory_watcher_leadership_changes_total"] == 4.0
    assert found['factory_watcher_leadership_changes_total{reason="fenced"}'] == 1.0
    assert "garbage" not in found


def sweep(at: float, **leading: float | None) -> Sweep:
    """A sweep where each replica said `factory_watcher_leader` VALUE (None: no answer)."""
    return Sweep(
        at,
        tuple(
            Reading(name, 1, None if value is None else {"factory_watcher_leader": value})
            for name, value in leading.items()
        ),
    )


def test_overlaps_are_runs_of_sweeps_with_two_leaders() -> None:
    """Consecutive sweeps with two or more leaders merge into one overlap; silence is no vote."""
    sweeps = [
        sweep(0.0, a=1, b=0, c=0),
        sweep(0.1, a=1, b=1, c=0),
        sweep(0.2, a=1, b=1, c=1),
        sweep(0.3, a=None, b=1, c=0),
        sweep(0.4, a=1, b=None, c=1),
    ]
    assert overlaps(sweeps) == [
        Overlap(0.1, 0.2, frozenset("abc"), 2),
        Overlap(0.4, 0.4, frozenset("ac"), 1),
    ]
    assert sweeps[3].leaders == {"b"}


def test_counters_add_up_every_process_that_ran() -> None:
    """A restarted replica's counters start again: each instance's last reading counts."""
    sweeps = [
        Sweep(0, (Reading("a", 1, {"factory_watcher_fenced_writes_total": 1}),)),
        Sweep(1, (Reading("a", 1, {"factory_watcher_fenced_writes_total": 3}),)),
        Sweep(2, (Reading("a", 1, None),)),
        Sweep(3, (Reading("a", 2, {"factory_watcher_fenced_writes_total": 2}),)),
        Sweep(4, (Reading("b", 1, {"factory_watcher_rows_requeued_total": 4}),)),
    ]
    totals = counter_totals(sweeps)
    assert totals["fenced_writes"] == 5
    assert totals["rows_requeued"] == 4
    assert totals["renew_failures"] == 0


def delivery(event_id: str, session: str | None = "s", sequence: int | None = 1) -> Delivery:
    """One receipt."""
    return Delivery(event_id, session, sequence, 0.0)


def test_the_tally_finds_lost_duplicated_unknown_dead_and_reordered() -> None:
    """Recorded against received: each way they can differ is counted apart."""
    recorded = {
        "e1": "delivered",
        "e2": "delivered",
        "e3": "pending",
        "e4": "dead",
        "e5": "delivered",
    }
    received = [
        delivery("e1", "s", 1),
        delivery("e2", "s", 3),
        delivery("e1", "s", 1),  # a duplicate, not a reordering
        delivery("e5", "s", 2),  # older than e2: out of order
        delivery("e1", "s", 1),
        delivery("x9", "t", 1),
    ]
    found = tally(recorded, received)
    assert found == Tally(
        recorded=5,
        delivered=3,
        lost=("e3", "e4"),
        duplicates=2,
        duplicated={"e1": 3},
        unknown=("x9",),
        dead=("e4",),
        reordered=1,
    )


def outcome(
    failures: tuple[Failure, ...],
    *,
    lost: tuple[str, ...] = (),
    duplicates: int = 0,
    overlapping: tuple[Overlap, ...] = (),
    resumed: float | None = 1.0,
) -> Outcome:
    """An outcome with the given parts and a clean tally otherwise."""
    return Outcome(
        failures=failures,
        tally=Tally(10, 10 - len(lost), lost, duplicates, {}, (), (), 0),
        overlaps=overlapping,
        resumed_zero_after=resumed,
        counters={"fenced_writes": 3},
    )


KILLS = tuple(Failure(Kind.KILL, "r1", took, True) for took in (9.0, 10.0, 11.0, 10.5, 9.5))
GOOD = (
    *KILLS,
    Failure(Kind.TERM, "r2", 0.4, True),
    Failure(Kind.PAUSE, "r3", 10.2, True),
    Failure(Kind.CUT, "r1", None, False, "2 backend(s) terminated; kept its lease"),
)


def test_a_good_run_misses_nothing_and_sums_up_in_one_line() -> None:
    """Seven failovers, takeovers within 15 s, a quick handover: one line, no misses."""
    result = outcome(GOOD, duplicates=14)
    assert missed(result, Limits()) == []
    assert summary_line(result) == (
        "lost=0 duplicates=14 failovers=7 takeover_p50=10.1s takeover_max=11.0s "
        "handover_s=0.4s fenced_writes=3 overlap=0"
    )


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (outcome(GOOD, lost=("e1",)), "1 notification(s) lost: e1"),
        (outcome(GOOD, duplicates=15), "15 duplicate(s), more than 2 for each of 7 failover(s)"),
        (
            outcome(GOOD, overlapping=(Overlap(1.0, 1.2, frozenset("ab"), 3),)),
            "two leaders at once (a, b) in 3 sweep(s) over 0.2s",
        ),
        (
            outcome((*KILLS[:4], Failure(Kind.KILL, "r1", 15.5, True))),
            "takeover after SIGKILL of r1 took 15.5s (> 15.0s)",
        ),
        (
            outcome((Failure(Kind.KILL, "r1", None, False),)),
            "no replica took over after SIGKILL of r1",
        ),
        (
            outcome((Failure(Kind.TERM, "r2", 2.5, True),)),
            "the SIGTERM handover took 2.5s (> 2.0s)",
        ),
        (
            outcome((Failure(Kind.PAUSE, "r3", 10.0, True),), resumed=None),
            "the paused leader reported 0 never (limit 10.0s)",
        ),
        (
            outcome((Failure(Kind.PAUSE, "r3", 10.0, True),), resumed=10.5),
            "the paused leader reported 0 after 10.5s (limit 10.0s)",
        ),
        (
            outcome((Failure(Kind.CUT, "r1", None, True, "stepped down"),)),
            "no replica took over after database connections cut of r1",
        ),
    ],
)
def test_each_missed_limit_is_named(result: Outcome, problem: str) -> None:
    """Every limit of the issue's "done" is checked and, when missed, said in words."""
    assert problem in missed(result, Limits())


def test_proc_tcp_rows_give_ports_and_inodes() -> None:
    """Ports are hex after the last colon (IPv4 and IPv6 alike); the inode is column 10."""
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:D431 0100007F:1538 01 00000000:00000000 00:00000000 00000000  0 "
        "0 424242 1 0000000000000000 20 4 30 10 -1\n"
        "   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000 0 0 77 1\n"
        "short line\n"
    )
    assert parse_proc_tcp(text) == [(0xD431, 5432, 424242), (8080, 0, 77)]


def test_client_ports_are_this_process_connections_to_a_server() -> None:
    """A connection this process opened to a listening port is found by its local port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            assert client_ports(os.getpid(), port) == {client.getsockname()[1]}
    assert client_ports(2**22 + 1, port) == set()  # no such process: nothing


@pytest.mark.parametrize(
    ("admin", "application", "url"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "fw-ha-r1",
            "postgresql://postgres@127.0.0.1:5432/fw_x?application_name=fw-ha-r1",
        ),
        (
            "host=db port=6543 user=me password=p@ss dbname=x",
            None,
            "postgresql://me:p%40ss@db:6543/fw_x",
        ),
    ],
)
def test_replica_urls_name_the_scratch_database(
    admin: str, application: str | None, url: str
) -> None:
    """The server of the admin URL (or key=value string), the scratch database, the name."""
    assert libpq_url(admin, "fw_x", application) == url


def test_the_receiver_counts_each_webhook_by_event_id() -> None:
    """Real POSTs to a WebhookReceiver: each body's id, session and sequence, in order."""
    deliveries = Deliveries(clock=lambda: 5.0)
    with (
        WebhookReceiver(on_message=lambda m: deliveries.on_body(m.json)) as receiver,
        httpx.Client(trust_env=False) as client,
    ):
        for body in (
            {"id": "e1", "sequence": 1, "session": {"id": "s"}},
            {"id": "e1", "sequence": 1, "session": {"id": "s"}},
            {"id": "e2", "sequence": 2, "session": None},
            {"no": "id"},
        ):
            assert client.post(receiver.url + "/hook", json=body).status_code == 204
    assert deliveries.items() == [
        Delivery("e1", "s", 1, 5.0),
        Delivery("e1", "s", 1, 5.0),
        Delivery("e2", None, 2, 5.0),
    ]
    assert deliveries.last_at() == 5.0


class _Metrics(BaseHTTPRequestHandler):
    """Serves the server's `text` at /metrics."""

    def do_GET(self) -> None:
        body = self.server.text.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def endpoints() -> Iterator[dict[str, int]]:
    """Three /metrics ports: a leader, a standby, and one that accepts and never answers."""
    servers = []
    ports = {}
    for name, text in (("a", METRICS), ("b", METRICS.replace("leader 1.0", "leader 0.0"))):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
        server.text = text  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        ports[name] = server.server_address[1]
    # Listening, never accepting: what a replica stopped with SIGSTOP looks like.
    silent = socket.create_server(("127.0.0.1", 0), backlog=8)
    ports["c"] = silent.getsockname()[1]
    try:
        yield ports
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        silent.close()


def test_the_scraper_asks_every_replica_at_once(endpoints: dict[str, int], tmp_path: Path) -> None:
    """A sweep reads each replica's gauge; a silent one is no answer, not a leader."""
    replicas = [Replica(name, tmp_path, port, tmp_path / name) for name, port in endpoints.items()]
    scraper = Scraper(replicas)
    try:
        found = scraper.sweep()
        assert found.leaders == {"a"}
        reading_b, reading_c = found.reading("b"), found.reading("c")
        assert reading_b is not None
        assert reading_b.metrics is not None
        assert reading_b.metrics["factory_watcher_leader"] == 0.0
        assert reading_c is not None
        assert reading_c.metrics is None
        assert scraper.sweeps() == [found]
        scraper.start()  # sweeping in the background from now on
        later = scraper.wait_for("a later sweep", lambda s: s.at > found.at, 10)
        assert later.leaders == {"a"}
    finally:
        scraper.stop()


@pytest.mark.postgres
def test_a_cut_terminates_every_backend_of_one_client() -> None:
    """pg_terminate_backend on the sessions found by application_name or client port."""
    with scratch_database("fw_ha_test") as conninfo:
        name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
        assert isinstance(name, str)
        victim = psycopg.connect(libpq_url(ADMIN_URL, name, "fw-ha-victim"), autocommit=True)
        bystander = psycopg.connect(libpq_url(ADMIN_URL, name, "fw-ha-other"), autocommit=True)
        database = Database(libpq_url(ADMIN_URL, name), name, 5432)
        try:
            assert database.cut("fw-ha-victim", 2**22 + 1) == 1
            with pytest.raises(psycopg.OperationalError):
                victim.execute("SELECT 1")
            assert bystander.execute("SELECT 1").fetchone() == (1,)
        finally:
            database.close()
            victim.close()
            bystander.close()
