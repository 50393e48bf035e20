"""The conformance suite's fixtures: one backend per parameter, a store opened on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.backends import BACKENDS, Backend, make_backend
from watcher.store import Store

# PostgreSQL runs need the server: marked, and skipped with the reason without one.
_PARAMS = [
    pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name
    for name in BACKENDS
]


@pytest.fixture(params=_PARAMS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store backend in turn, with fresh data."""
    with make_backend(request.param, tmp_path) as made:
        yield made


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """A store on the backend's fresh data, closed after the test."""
    opened = backend.open()
    yield opened
    opened.close()
