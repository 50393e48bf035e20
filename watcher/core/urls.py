"""Facts about URLs that several edges need."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_url(url: str) -> bool:
    """True when `url` points at this host (localhost, 127.0.0.0/8, ::1).

    Plain http to loopback never crosses a network, so it needs no opt-in.
    """
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
