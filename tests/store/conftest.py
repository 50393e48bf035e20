"""The conformance suite's fixtures: one backend per parameter, a store opened on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.backends import BACKENDS, Backend, make_backend
from watcher.store import Store


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each store backend in turn, with fresh data."""
    return make_backend(request.param, tmp_path)


@pytest.fixture
def store(backend: Backend) -> Iterator[Store]:
    """A store on the backend's fresh data, closed after the test."""
    opened = backend.open()
    yield opened
    opened.close()
