"""URL facts."""

from __future__ import annotations

import pytest

from watcher.core.urls import is_loopback_url


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.8.9.10/", True),
        ("http://localhost/x", True),
        ("http://[::1]:9000/", True),
        ("http://10.0.0.1/", False),
        ("https://hooks.example.com/x", False),
        ("http://localhost.example.com/", False),
        ("not a url", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    """Only this host's own addresses count as loopback."""
    assert is_loopback_url(url) is loopback
