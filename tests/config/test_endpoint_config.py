"""The `http:` section and `log_format:` of the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config.loader import ConfigError, load_settings
from watcher.core.settings import HttpSettings, LogFormat

BASE = "factory:\n  api_key: ${KEY}\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems name plain `config.yaml`."""
    monkeypatch.chdir(tmp_path)


def load(tmp_path: Path, text: str) -> HttpSettings | str | None:
    """The http settings of BASE + `text`, or the problems as one string."""
    path = Path("config.yaml")
    path.write_text(BASE + text)
    path.chmod(0o600)
    try:
        return load_settings(path, env={"KEY": "fk-1"}).http
    except ConfigError as error:
        return str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("http:\n", None),
        ("http:\n  listen: 127.0.0.1:9464\n", HttpSettings("127.0.0.1", 9464)),
        ("http:\n  listen: localhost:0\n", HttpSettings("127.0.0.1", 0)),
        ("http:\n  listen: '[::1]:9464'\n", HttpSettings("::1", 9464)),
        (
            "http:\n  listen: 0.0.0.0:9464\n  allow_remote: true\n",
            HttpSettings("0.0.0.0", 9464, allow_remote=True),
        ),
        (
            "http:\n  listen: 0.0.0.0:9464\n",
            "config.yaml:4: http.listen: 0.0.0.0 is not a loopback address: the figures "
            "describe your sessions; set 'allow_remote: true' beside 'listen' to serve them "
            "to the network",
        ),
        (
            "http:\n  listen: metrics.example.com:9464\n",
            "config.yaml:4: http.listen: expected IP:PORT, e.g. 127.0.0.1:9464 or "
            "[::1]:9464 (an IP address, not a host name)",
        ),
        (
            "http:\n  listen: 127.0.0.1:70000\n",
            "config.yaml:4: http.listen: the port must be at most 65535",
        ),
        (
            "http:\n  listen: ::1:9464\n",
            "config.yaml:4: http.listen: expected IP:PORT, e.g. 127.0.0.1:9464 or "
            "[::1]:9464 (an IPv6 address goes in brackets)",
        ),
        ("http:\n  allow_remote: true\n", "config.yaml:3: http.listen: is required"),
        ("http:\n  listen: 127.0.0.1:1\n  port: 2\n", "config.yaml:5: http.port: unknown key"),
    ],
    ids=[
        "absent",
        "empty",
        "loopback",
        "localhost",
        "ipv6",
        "remote-allowed",
        "remote-refused",
        "host-name",
        "port-range",
        "ipv6-unbracketed",
        "no-listen",
        "unknown-key",
    ],
)
def test_http_section(tmp_path: Path, text: str, expected: HttpSettings | str | None) -> None:
    """Off unless set; loopback unless allow_remote; every mistake named with its line."""
    found = load(tmp_path, text)
    if isinstance(expected, str):
        assert isinstance(found, str)
        assert found.startswith(expected)
    else:
        assert found == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", LogFormat.TEXT), ("log_format: json\n", LogFormat.JSON)],
)
def test_log_format(tmp_path: Path, text: str, expected: LogFormat) -> None:
    """`log_format` defaults to text."""
    path = Path("config.yaml")
    path.write_text(BASE + text)
    path.chmod(0o600)
    assert load_settings(path, env={"KEY": "fk-1"}).log_format is expected


def test_log_format_mistake_is_located(tmp_path: Path) -> None:
    """A bad `log_format` is reported at its line."""
    path = Path("config.yaml")
    path.write_text(BASE + "log_format: xml\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={"KEY": "fk-1"})
    assert str(caught.value).startswith("config.yaml:3: log_format:")
