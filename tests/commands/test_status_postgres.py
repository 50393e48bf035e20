"""`status` of a PostgreSQL state: the lease (holder, epoch, expires in), never the password."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.commands.invoke import run_cli
from watcher.commands.status import build_report, lease_line, render_text, to_json
from watcher.config.loader import load_settings
from watcher.store import LeaseRow, StatusRows
from watcher.store.open import open_store

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PASSWORD = "pw:hunter2/@x"


def rows(lease: LeaseRow | None) -> StatusRows:
    """What a store read: nothing but the lease."""
    return StatusRows(meta={}, states={}, since={}, polls={}, notified={}, lease=lease)


def lease(expires_in: float) -> LeaseRow:
    """A lease row read at T0 that lapses `expires_in` seconds later (database clock)."""
    return LeaseRow(
        holder="db1:4242:ab12cd34",
        epoch=7,
        acquired_at=T0 - timedelta(minutes=5),
        renewed_at=T0 - timedelta(seconds=2),
        expires_at=T0 + timedelta(seconds=expires_in),
        read_at=T0,
    )


@pytest.mark.parametrize(
    ("expires_in", "line"),
    [
        (8.0, "leader: db1:4242:ab12cd34 (epoch 7), lease expires in 8s"),
        (-30.0, "leader: none (the lease lapsed 30s ago; last held by db1:4242:ab12cd34, epoch 7)"),
    ],
)
def test_the_lease_shows_holder_epoch_and_expiry(expires_in: float, line: str) -> None:
    """A held lease names its holder and when it lapses; a lapsed one says nobody leads."""
    # The local clock is ten minutes off: "expires in" follows the database's clock only.
    report = build_report(
        rows(lease(expires_in)), "postgresql://fw@db:5432/fw", (), T0 + timedelta(minutes=10)
    )
    assert report.lease is not None
    assert lease_line(report.lease) == line
    assert line in render_text(report).splitlines()
    document = to_json(report)["lease"]
    assert document == {
        "holder": "db1:4242:ab12cd34",
        "epoch": 7,
        "held": expires_in > 0,
        "expires_in_s": expires_in,
        "acquired_at": "2026-12-05T11:55:00+00:00",
        "renewed_at": "2026-12-05T11:59:58+00:00",
    }


def test_without_a_lease_status_shows_no_leader_line() -> None:
    """SQLite (or a PostgreSQL state no replica led yet): `lease` is null, no leader line."""
    report = build_report(rows(None), "/var/lib/fw/state.db", (), T0)
    assert report.lease is None
    assert to_json(report)["lease"] is None
    assert "leader:" not in render_text(report)


def url_of(conninfo: str) -> str:
    """The test database as a postgresql:// URL (no password: the server trusts us)."""
    params = conninfo_to_dict(conninfo)
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"


@pytest.mark.postgres
def test_status_reads_the_lease_from_postgresql_and_never_shows_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    """`status` and `status --json` show the lease a replica holds; the password given in
    `password_file` (accepted and ignored by a trusting server) appears nowhere."""
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "factory:\n  api_key: fk-test-0123456789\n"
        f"state:\n  url: {url_of(pg_url)}\n  password_file: pw\n"
        "sessions:\n  - id: s1\n"
    )
    config.chmod(0o600)
    settings = load_settings(config, env={})
    open_store(settings).close()  # the schema, as a replica creates it
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO leader_lease VALUES ('leader', 'db1:4242:ab12cd34', 3, now(), now(),"
            " now() + interval '10 seconds')"
        )
    code, out, err = run_cli("status", "-c", str(config))
    assert code == 0, err
    assert "leader: db1:4242:ab12cd34 (epoch 3), lease expires in" in out
    assert "s1" in out
    code, out_json, err_json = run_cli("status", "--json", "-c", str(config))
    assert code == 0, err_json
    document = json.loads(out_json)
    assert document["lease"]["holder"] == "db1:4242:ab12cd34"
    assert document["lease"]["epoch"] == 3
    assert document["lease"]["held"] is True
    assert 0 < document["lease"]["expires_in_s"] <= 10
    everything = out + err + out_json + err_json
    for form in (PASSWORD, "hunter2", "pw%3Ahunter2"):
        assert form not in everything
    assert document["database"].startswith("postgresql://postgres@127.0.0.1:")


@pytest.mark.postgres
def test_status_of_an_unreachable_postgresql_names_it_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server at the URL: a one-line error naming the database, exit 1, no password."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "factory:\n  api_key: fk-test-0123456789\n"
        "state:\n  url: postgresql://fw:${FW_PW}@127.0.0.1:1/fw?connect_timeout=2\n"
    )
    config.chmod(0o600)
    monkeypatch.setenv("FW_PW", "hunter2-secret")
    code, out, err = run_cli("status", "-c", str(config))
    assert code == 1
    assert "127.0.0.1:1/fw" in err
    assert "hunter2" not in out + err
    assert "Traceback" not in err
