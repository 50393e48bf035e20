"""Parsers and checks for single config values: durations, jitter, URLs, ids, names, secrets."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
import string
from datetime import time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"(?P<amount>[0-9]+)(?P<unit>ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SESSION_ID_FORBIDDEN = re.compile(r"[/?#%\s]")
_WHSEC_PREFIX = "whsec_"
TARGET_NAME = re.compile(r"[A-Za-z0-9_.-]+")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
RESERVED_HEADERS = frozenset(
    {
        "content-length",
        "host",
        "transfer-encoding",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


def parse_duration(value: str | int) -> timedelta:
    """Parse `500ms`, `30s`, `5m`, `2h`, `1d` or a whole number of seconds; > 0.

    Raises ValueError saying what is expected.
    """
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            "expected a duration such as 500ms, 30s, 5m, 2h or 1d (a plain number means seconds)"
        )
    unit = _DURATION_UNITS[match["unit"] or "s"]
    try:
        duration = timedelta(**{unit: int(match["amount"])})
    except OverflowError:
        raise ValueError("duration is too long") from None
    if duration <= timedelta(0):
        raise ValueError("duration must be longer than 0")
    return duration


def parse_duration_or_off(value: str | int) -> timedelta | str:
    """A duration, or `off` (returned as the string "off")."""
    if isinstance(value, str) and value.strip().lower() == "off":
        return "off"
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            "expected a duration such as 30s, 5m or 1h, or 'off' to stop polling"
        ) from None


def parse_jitter(value: str | float) -> float:
    """Parse a jitter as a percentage (`"10%"`) or a fraction (`0.1`); result in 0..0.5.

    Raises ValueError saying what is expected.
    """
    text = str(value).strip()
    percent = text.endswith("%")
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError("expected a percentage such as '10%' or a fraction from 0 to 0.5")
    fraction = number / 100 if percent else number
    if not 0 <= fraction <= 0.5:
        if percent:
            raise ValueError("jitter must be between 0% and 50%")
        raise ValueError("jitter must be a fraction from 0 to 0.5 (write '10%' for a percentage)")
    return fraction


def is_http_url(value: str) -> bool:
    """Whether `value` is an absolute http(s) URL with a host and no whitespace."""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not any(c.isspace() for c in value)
    )


def http_url(value: str) -> str:
    """`value` if it is an http(s) URL; ValueError otherwise."""
    if not is_http_url(value):
        raise ValueError("expected an http:// or https:// URL")
    return value


def session_url(value: str) -> str:
    """`value` if it is an http(s) URL whose only placeholder is `{id}`; ValueError otherwise."""
    http_url(value)
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError:
        raise ValueError("unbalanced braces; write {id} where the session id goes") from None
    if fields - {"id"}:
        raise ValueError("the only placeholder is {id}")
    return value


def session_id(value: str) -> str:
    """`value` if it is safe as one URL path segment; ValueError otherwise."""
    # The id becomes a URL path segment: keep it from reaching other endpoints.
    if _SESSION_ID_FORBIDDEN.search(value) or value in (".", ".."):
        raise ValueError("a session id cannot contain '/', '?', '#', '%' or spaces")
    return value


def one_or_many(value: Any) -> Any:
    """A single string stands for a one-item list (`on: x` is `on: [x]`)."""
    return (value,) if isinstance(value, str) else value


def is_whsec(value: str) -> bool:
    """Whether `value` is a Standard Webhooks secret: `whsec_` followed by base64."""
    if not value.startswith(_WHSEC_PREFIX):
        return False
    try:
        return bool(base64.b64decode(value.removeprefix(_WHSEC_PREFIX), validate=True))
    except (binascii.Error, ValueError):
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """Parse `IP:PORT` (`127.0.0.1:9464`, `[::1]:9464`; `localhost` means 127.0.0.1).

    Port 0 picks a free port. Raises ValueError saying what is expected.
    """
    expected = "expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(expected)
    port = int(port_text)
    if port > 65535:
        raise ValueError("the port must be at most 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(expected + " (an IPv6 address goes in brackets)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(expected + " (an IP address, not a host name)") from None
    return str(address), port


def is_loopback_address(host: str) -> bool:
    """Whether the IP address `host` is a loopback address."""
    return ipaddress.ip_address(host).is_loopback


def format_duration(value: timedelta) -> str:
    """The shortest config spelling of `value` (`30s`, `2m`, `1d`, `500ms`)."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


_CLOCK_TIME = re.compile(r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_clock_time(value: Any) -> time:
    """Parse a wall-clock time `HH:MM` (24-hour); ValueError otherwise."""
    match = _CLOCK_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match["hour"]) > 23 or int(match["minute"]) > 59:
        raise ValueError("expected a time of day as HH:MM, from 00:00 to 23:59")
    return time(int(match["hour"]), int(match["minute"]))


def parse_timezone(value: Any) -> str:
    """`value` if it names an IANA time zone (`Europe/Berlin`, `UTC`); ValueError otherwise."""
    if not isinstance(value, str) or not value or value.startswith(("/", ".")):
        raise ValueError("expected an IANA time zone name such as Europe/Berlin or UTC")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone '{value}'; use an IANA name such as Europe/Berlin or UTC"
        ) from None
    return value


def parse_day(value: Any) -> int:
    """A weekday name (`mon`..`sun`, any case) as 0..6; ValueError otherwise."""
    text = value.strip().lower()[:3] if isinstance(value, str) else ""
    if text not in DAY_NAMES or (isinstance(value, str) and len(value.strip()) < 3):
        raise ValueError("expected a weekday: " + ", ".join(DAY_NAMES))
    return DAY_NAMES.index(text)
