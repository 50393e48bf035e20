"""Helpers every notifier uses to describe failures without leaking secrets."""

from __future__ import annotations

import errno
import ssl

import pytest

from watcher.notifiers.base import bypasses_proxy, excerpt, transport_reason


@pytest.mark.parametrize(
    ("data", "redact", "expected"),
    [
        (b"plain", (), "plain"),
        ("multi\nline\r\n\ttext  here", (), "multi line text here"),
        (b"\x00\xffbin\x07ary", (), "\ufffdbin ary"),
        ("token xoxb-secret in body", ("xoxb-secret",), "token ******** in body"),
        ("nothing to hide", ("",), "nothing to hide"),
        ("x" * 250, (), "x" * 199 + "…"),
        ("", (), ""),
    ],
)
def test_excerpt_table(data: bytes | str, redact: tuple[str, ...], expected: str) -> None:
    """Excerpts are single-line, printable, redacted, and at most 200 characters."""
    assert excerpt(data, redact=redact) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError(), "x: timed out"),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
            "x: connection failed (ConnectionRefusedError: Connection refused)",
        ),
        (RuntimeError("http://secret.example/hook/CANARY"), "x: connection failed (RuntimeError)"),
    ],
)
def test_transport_reason_names_the_error_but_never_its_text(
    exc: BaseException, expected: str
) -> None:
    """Reasons show the type and OS error text, never the exception's own message."""
    assert transport_reason("x", exc) == expected


def test_transport_reason_digs_out_a_wrapped_tls_error() -> None:
    """A TLS failure wrapped by the HTTP client is reported by its OpenSSL reason."""
    inner = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    inner.reason = "WRONG_VERSION_NUMBER"
    try:
        try:
            raise inner
        except ssl.SSLError as err:
            raise ConnectionError("https://CANARY/") from err
    except ConnectionError as outer:
        reason = transport_reason("x", outer)

    assert reason == "x: connection failed (ConnectionError: TLS WRONG_VERSION_NUMBER)"


@pytest.mark.parametrize(
    ("url", "no_proxy", "bypass"),
    [
        ("http://127.0.0.1:8080/api/", None, True),
        ("http://localhost/api/", None, True),
        ("http://[::1]:9/api/", None, True),
        ("https://slack.com/api/", None, False),
        ("https://slack.com/api/", "slack.com", True),
        ("https://hooks.slack.com/services/x", ".slack.com", True),
    ],
)
def test_bypasses_proxy(
    monkeypatch: pytest.MonkeyPatch, url: str, no_proxy: str | None, bypass: bool
) -> None:
    """Loopback and NO_PROXY hosts skip the environment proxy; others use it."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)

    assert bypasses_proxy(url) is bypass
