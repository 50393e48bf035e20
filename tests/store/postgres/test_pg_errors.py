"""A PostgreSQL store that cannot be reached or used fails with a clean `StoreError`:
the database named as `postgresql://user@host:port/db`, never the password."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

from tests.core.factories import T0, snap
from watcher.store import StoreError
from watcher.store.postgres import PostgresReadOnlyStore, PostgresStore, display
from watcher.store.postgres.base import scrub

SECRET = "s3cret-Pa55word"


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://fw:{SECRET}@db.example:6432/state",
            "postgresql://fw@db.example:6432/state",
        ),
        (
            f"postgresql://fw@db.example/state?password={SECRET}",
            "postgresql://fw@db.example:5432/state",
        ),
        (
            f"host=db.example user=fw password={SECRET} dbname=state",
            "postgresql://fw@db.example:5432/state",
        ),
        ("postgresql:///state", "postgresql://localhost:5432/state"),
    ],
    ids=["in-the-authority", "in-the-query", "key-value", "bare"],
)
def test_the_display_form_never_holds_the_password(url: str, shown: str) -> None:
    """user@host:port/db, however the URL carries its password."""
    assert display(url) == shown


def test_an_unreachable_server_is_a_clean_error_without_the_password(closed_port: int) -> None:
    """Connection refused: StoreError naming the database, no password, no traceback text."""
    url = f"postgresql://fw:{SECRET}@127.0.0.1:{closed_port}/state"
    with pytest.raises(StoreError) as raised:
        PostgresStore(url, connect_timeout=2)
    message = str(raised.value)
    assert message.startswith(
        f"cannot open state database postgresql://fw@127.0.0.1:{closed_port}/state:"
    )
    assert SECRET not in message
    assert "Traceback" not in message
    with pytest.raises(StoreError) as read_only:
        PostgresReadOnlyStore(url, connect_timeout=2)
    assert SECRET not in str(read_only.value)


@pytest.mark.postgres
@pytest.mark.parametrize("wrong", ["user", "database"])
def test_a_wrong_role_or_database_is_a_clean_error_without_the_password(
    pg_url: str, wrong: str
) -> None:
    """The server refuses the login: its reason is shown, the password is not."""
    params = psycopg.conninfo.conninfo_to_dict(pg_url)
    params["password"] = SECRET
    params["user" if wrong == "user" else "dbname"] = "fw_nobody_here"
    url = psycopg.conninfo.make_conninfo(**params)
    with pytest.raises(StoreError) as raised:
        PostgresStore(url, connect_timeout=2)
    message = str(raised.value)
    assert "fw_nobody_here" in message
    assert "does not exist" in message
    assert SECRET not in message


class PasswordRefuser:
    """A PostgreSQL server on 127.0.0.1 that asks for a password and refuses it, echoing it.

    Speaks just enough of the protocol (SSL/GSS requests declined, startup,
    cleartext password, a FATAL error): the worst case of a server whose
    refusal quotes the password back.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self._refuse(conn)

    @staticmethod
    def _read(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client left")
            data += chunk
        return data

    def _refuse(self, conn: socket.socket) -> None:
        try:
            while True:
                (length,) = struct.unpack("!i", self._read(conn, 4))
                body = self._read(conn, length - 4)
                if struct.unpack("!i", body[:4])[0] in (80877103, 80877104):  # SSL, GSS
                    conn.sendall(b"N")
                    continue
                break
            conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # cleartext password, please
            kind = self._read(conn, 1)
            (length,) = struct.unpack("!i", self._read(conn, 4))
            password = self._read(conn, length - 4).rstrip(b"\0")
            assert kind == b"p"
            fields = (
                b"SFATAL\0VFATAL\0C28P01\0M"
                + b'password authentication failed for user "fw" (password "'
                + password
                + b'")\0\0'
            )
            conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
        except (ConnectionError, OSError):
            return

    def close(self) -> None:
        """Stop listening (shutdown wakes the accepting thread)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def refuser() -> Iterator[PasswordRefuser]:
    """A password-refusing server, closed after the test."""
    server = PasswordRefuser()
    yield server
    server.close()


def test_a_wrong_password_is_refused_cleanly_even_when_the_server_echoes_it(
    refuser: PasswordRefuser,
) -> None:
    """The server's refusal is shown, with the password it quoted masked."""
    url = f"postgresql://fw:{SECRET}@127.0.0.1:{refuser.port}/state?sslmode=disable"
    with pytest.raises(StoreError) as raised:
        PostgresStore(url, connect_timeout=2)
    message = str(raised.value)
    assert f"postgresql://fw@127.0.0.1:{refuser.port}/state" in message
    assert "password authentication failed" in message
    assert SECRET not in message
    with pytest.raises(StoreError) as read_only:
        PostgresReadOnlyStore(url, connect_timeout=2)
    assert "password authentication failed" in str(read_only.value)
    assert SECRET not in str(read_only.value)


@pytest.mark.postgres
def test_a_database_gone_away_mid_life_is_a_store_error(pg_url: str) -> None:
    """A call whose connection the server killed fails as StoreError; the next one works."""
    store = PostgresStore(pg_url)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        store.record("s1", snap(), [], [], T0)  # the pool checks and replaces dead connections
        assert store.load_state("s1") == snap()
    finally:
        store.close()


@pytest.mark.postgres
def test_the_pools_own_errors_are_store_errors_too(pg_url: str) -> None:
    """A call on a closed pool (psycopg_pool's PoolClosed) is a StoreError naming the database."""
    store = PostgresStore(pg_url)
    store.close()
    with pytest.raises(StoreError, match=r"cannot read state database postgresql://"):
        store.load_state("s1")
    with pytest.raises(StoreError, match=r"cannot write to state database postgresql://"):
        store.record("s1", snap(), [], [], T0)


@pytest.mark.parametrize("password", ["p@ss:w/rd%", "plain-password"])
def test_scrubbing_masks_the_password_in_every_form_it_takes(password: str) -> None:
    """Decoded or percent-encoded, and the URL whole, never survive into a message."""
    encoded = quote(password, safe="")
    url = f"postgresql://fw:{encoded}@db.example:5432/state"
    text = scrub(f"failed for {url}: saw {password} and {encoded}", url)
    assert password not in text
    assert encoded not in text
    assert "postgresql://fw@db.example:5432/state" in text
