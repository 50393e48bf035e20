"""Fixtures every test module shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The daemon runs on asyncio (psycopg and httpx-aiohttp want it), so every async test does."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's HTTP on loopback even where the machine sets proxy variables."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a new, empty PostgreSQL database of this test's own (see tests/postgres.py)."""
    from tests.postgres import scratch_database

    with scratch_database() as url:
        yield url
