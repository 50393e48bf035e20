"""Operators' view of a running daemon subprocess: /metrics, /readyz, `status`, `backup`."""

from __future__ import annotations

import http.client
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.process import Daemon, cli, secret_env, start_daemon, write_config
from tests.rig import API_KEY, SLACK_TOKEN, WEBHOOK_SECRET, Rig, running_rig, wait_for
from watcher.testing.fakehttp import Fault, FaultRule

pytestmark = pytest.mark.slow

# Distinctive ids: any of them in a label value would be a leak.
SESSION_A = "ses-7f3a9c1e-alpha"
SESSION_B = "ses-51e2b0d4-bravo"
ENDPOINT_LINE = re.compile(r"metrics and health on http://127\.0\.0\.1:(\d+)/metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Simulator and sinks on loopback."""
    with running_rig(tmp_path) as running:
        yield running


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, body, content type) of GET `path` on the daemon's endpoint."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, body, response.getheader("Content-Type") or ""
    finally:
        conn.close()


def scrape(port: int) -> Samples:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    status, body, content_type = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def start(
    rig: Rig, tmp_path: Path, state: Path | None = None, extra_env: dict[str, str] | None = None
) -> tuple[Daemon, int, Path]:
    """A daemon watching both sessions with the endpoint on a free port; (daemon, port, config)."""
    config = write_config(rig, tmp_path, [SESSION_A, SESSION_B])
    text = config.read_text() + "http:\n  listen: 127.0.0.1:0\n"
    if state is not None:
        text = text.replace(f"path: {tmp_path / 'state.db'}", f"path: {state}")
    config.write_text(text)
    log = tmp_path / "daemon.log"
    before = {sid: rig.sim.request_count(sid) for sid in (SESSION_A, SESSION_B)}
    daemon = start_daemon(config, secret_env(rig), log, extra_env)
    match = wait_for(lambda: ENDPOINT_LINE.search(daemon.text()), what="the endpoint's log line")
    port = int(match.group(1))
    wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=20, what="ready")
    # A second request for a session means its first poll was recorded.
    wait_for(
        lambda: all(rig.sim.request_count(sid) >= n + 2 for sid, n in before.items()),
        what="every session polled",
    )
    return daemon, port, config


def test_metrics_readiness_and_status_of_a_running_daemon(rig: Rig, tmp_path: Path) -> None:
    """Counters move with deliveries and failures, /readyz follows the API, status lists all."""
    for sid in (SESSION_A, SESSION_B):
        rig.sim.add_session(sid, title=f"Secret project {sid}", status="running")
    # As under systemd, stderr is "the journal" (JOURNAL_STREAM names the very
    # file), which timestamps lines itself: the daemon adds no time of its own.
    log = tmp_path / "daemon.log"
    log.touch()
    info = log.stat()
    journal = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    daemon, port, config = start(rig, tmp_path, extra_env=journal)
    try:
        assert get(port, "/healthz")[0] == 200
        first = scrape(port)
        assert value(first, "factory_watcher_polls_total", outcome="ok") > 0
        assert value(first, "factory_watcher_build_info", version="0.1.0") == 1
        assert value(first, "factory_watcher_api_up") == 1
        assert value(first, "factory_watcher_config_last_reload_success") == 1
        assert value(first, "process_resident_memory_bytes") > 0
        assert value(first, "factory_watcher_poll_duration_seconds_count") > 0

        # A finished run: status_changed to team-slack and ci, completed to ci.
        rig.sim.complete_run(SESSION_A)
        wait_for(
            lambda: (
                value(samples := scrape(port), "factory_watcher_notifications_total",
                      target="ci", outcome="sent") == 2
                and value(samples, "factory_watcher_notifications_total", target="team-slack",
                          outcome="sent") == 1
            ),
            timeout=20,
            what="two webhooks and a Slack message sent",
        )  # fmt: skip
        moved = scrape(port)
        assert value(moved, "factory_watcher_events_total", type="session.status_changed") == 1
        assert value(moved, "factory_watcher_events_total", type="session.completed") == 1

        # A sink that fails: the Slack webhook is revoked (dead letter), the webhook
        # receiver answers 503 once (retried, then sent).
        rig.slack_hook.revoke()
        rig.receiver.respond_with(503, times=1)
        rig.sim.archive(SESSION_A)
        rig.sim.complete_run(SESSION_B)
        wait_for(
            lambda: (
                value(samples := scrape(port), "factory_watcher_notifications_total",
                      target="ops", outcome="dead") == 1
                and value(samples, "factory_watcher_notifications_total", target="ci",
                          outcome="sent") == 4
            ),
            timeout=30,
            what="a dead letter for ops and the ci retry delivered",
        )  # fmt: skip
        failed = scrape(port)
        assert (
            value(failed, "factory_watcher_notification_failures_total", target="ops",
                  reason="invalid_token") == 1
        )  # fmt: skip
        assert (
            value(failed, "factory_watcher_notification_failures_total", target="ci",
                  reason="http_5xx") == 1
        )  # fmt: skip
        assert (
            value(failed, "factory_watcher_notifications_total", target="ci", outcome="retried")
            == 1
        )
        wait_for(
            lambda: value(scrape(port), "factory_watcher_outbox_dead", target="ops") == 1,
            what="the dead letter in the outbox gauge",
        )

        # `status --json` while the daemon runs: every session, every dead letter.
        result = cli(["status", "--json", "-c", str(config)], secret_env(rig), tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["daemon"]["running"] is True
        assert {s["id"] for s in report["sessions"]} == {SESSION_A, SESSION_B}
        assert all(s["last_poll"] for s in report["sessions"])
        dead = report["dead_letters"]
        assert [(d["target"], d["event"], d["session"]) for d in dead] == [
            ("ops", "session.archived", SESSION_A)
        ]
        assert "invalid_token" in dead[0]["last_error"]
        ops = next(t for t in report["outbox"] if t["target"] == "ops")
        assert ops["dead"] == 1
        assert ops["last_error"] == dead[0]["last_error"]

        # The API goes down: not ready, with the reason; back up: ready again.
        rig.sim.faults.add(FaultRule(Fault.HTTP_503, path_prefix="/api/v0/sessions", times=-1))
        down = wait_for(
            lambda: (answer := get(port, "/readyz"))[0] == 503 and answer,
            timeout=20,
            what="not ready while the API is down",
        )
        assert down[1].startswith("API down: no successful poll for")
        assert down[1].count("\n") == 1  # one line
        outage = scrape(port)
        assert value(outage, "factory_watcher_api_up") == 0
        assert value(outage, "factory_watcher_polls_total", outcome="server_error") > 0
        rig.sim.faults.clear()
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=30, what="ready after recovery")
        wait_for(lambda: value(scrape(port), "factory_watcher_api_up") == 1, what="api_up again")

        # No label anywhere carries a session id, a title or a secret.
        hook_url = secret_env(rig)["FW_SLACK_WEBHOOK_URL"]
        forbidden = (SESSION_A, SESSION_B, "Secret project", API_KEY, SLACK_TOKEN,
                     WEBHOOK_SECRET, hook_url)  # fmt: skip
        for (_, labels), _ in scrape(port).items():
            for _, label in labels:
                assert not any(word in label for word in forbidden), label
    finally:
        code = daemon.stop()
    assert code == 0
    text = daemon.text()
    for canary in (API_KEY, SLACK_TOKEN, WEBHOOK_SECRET):
        assert canary not in text
    lines = text.splitlines()
    assert lines
    assert all(line.split(" ", 1)[0] in {"DEBUG", "INFO", "WARNING", "ERROR"} for line in lines)


def test_backup_of_a_running_daemon_is_whole_and_a_fresh_daemon_continues(
    rig: Rig, tmp_path: Path
) -> None:
    """An online backup passes integrity_check; a daemon started on it resends nothing."""
    for sid in (SESSION_A, SESSION_B):
        rig.sim.add_session(sid, title=f"Title {sid}", status="running")
    daemon, port, config = start(rig, tmp_path)
    try:
        rig.sim.complete_run(SESSION_A)
        wait_for(lambda: len(rig.slack.messages) == 1, timeout=20, what="first delivery")
        copy = tmp_path / "backups" / "state-copy.db"
        copy.parent.mkdir()
        result = cli(["backup", str(copy), "-c", str(config)], secret_env(rig), tmp_path)
        assert result.returncode == 0, result.stderr
        assert "integrity check ok" in result.stdout
        again = cli(["backup", str(copy), "-c", str(config)], secret_env(rig), tmp_path)
        assert again.returncode != 0
        assert "already exists" in again.stderr
    finally:
        assert daemon.stop() == 0
    db = sqlite3.connect(copy)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["state-copy.db"]

    # B finishes while nothing runs. A fresh daemon on the copy knows B was running
    # (so it reports the run; an empty store would only discover B idle) and that A
    # was delivered (so it sends nothing twice).
    rig.sim.complete_run(SESSION_B)
    slack_before, ci_before = len(rig.slack.messages), len(rig.receiver.requests)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    daemon, port, _ = start(
        rig, fresh_dir, state=copy, extra_env={"FACTORY_WATCHER_LOG_FORMAT": "json"}
    )
    try:
        wait_for(
            lambda: value(scrape(port), "factory_watcher_notifications_total", target="ci",
                          outcome="sent") == 2,
            timeout=20,
            what="B's two webhooks",
        )  # fmt: skip
        wait_for(lambda: len(rig.slack.messages) == slack_before + 1, what="B's Slack message")
    finally:
        assert daemon.stop() == 0
    assert len(rig.slack.messages) == slack_before + 1
    records = [json.loads(line) for line in daemon.text().splitlines()]
    assert all(list(r)[:4] == ["ts", "level", "logger", "event"] for r in records)
    delivered = [r for r in records if r["event"].startswith("delivered")]
    assert {(r["session"], r["target"]) for r in delivered} == {
        (SESSION_B, "ci"),
        (SESSION_B, "team-slack"),
    }
    new = [r.json for r in rig.receiver.requests[ci_before:]]
    assert sorted((m["type"], m["session"]["id"]) for m in new) == [
        ("session.completed", SESSION_B),
        ("session.status_changed", SESSION_B),
    ]
