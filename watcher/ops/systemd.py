"""sd_notify(3) in plain Python, and a progress check that gates the watchdog.

`SystemdNotifier` speaks the service manager's notification protocol: one
AF_UNIX datagram of `KEY=VALUE` lines sent to `$NOTIFY_SOCKET`. It needs no
libsystemd, and it never raises on socket errors: outside systemd, or when the
socket has gone away, every call is a no-op that returns False. A service
without notifications is degraded; a service that crashes over one is down.

`ProgressWatchdog` is the pure half of the watchdog: the daemon's loops report
progress with `beat(component, now)`, and the pinger asks `healthy(now)` before
each `WATCHDOG=1`. A loop that is alive but wedged stops beating, the pings
stop, and systemd restarts the service after `WatchdogSec=`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)

#: `STATUS=` is shown on one line by `systemctl status`; longer text is cut.
STATUS_MAX_CHARS = 256

# sd_notify keys are upper-case by convention and systemd ignores the others;
# refusing them here turns a typo into an error instead of a silent no-op.
_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
_DEFAULT_SEND_TIMEOUT = 1.0


def _socket_address(raw: str | None) -> str | None:
    """Map `$NOTIFY_SOCKET` to an AF_UNIX address, or None if unusable.

    `@name` is Linux's abstract namespace, spelt with a leading NUL byte.
    """
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    # systemd >= 253 also hands out `vsock:` addresses (VMs); we do not run there.
    logger.debug("NOTIFY_SOCKET is neither a path nor @abstract; notifications disabled")
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """`$WATCHDOG_USEC` if it applies to this process, as sd_watchdog_enabled(3) decides."""
    raw_usec = env.get("WATCHDOG_USEC")
    if raw_usec is None:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        logger.debug("ignoring WATCHDOG_USEC: not an integer")
        return None
    if usec <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid is not None:
        # A child that inherited the variables must not ping for its parent.
        try:
            pid = int(raw_pid)
        except ValueError:
            logger.debug("ignoring the watchdog: WATCHDOG_PID is not an integer")
            return None
        if pid != os.getpid():
            return None
    return usec


def _check_line(line: str) -> str:
    key, sep, value = line.partition("=")
    if not sep or not _KEY.fullmatch(key):
        raise ValueError(f"not a KEY=VALUE notification line: {line!r}")
    if "\n" in value:
        raise ValueError(f"notification value of {key} spans several lines")
    if "\0" in line:
        # systemd drops a whole datagram that contains a NUL byte.
        raise ValueError(f"notification value of {key} contains a NUL byte")
    return line


class SystemdNotifier:
    """Sends state changes to the service manager; a no-op outside systemd.

    Each call opens a fresh datagram socket, as libsystemd does: nothing is
    kept open, so the notifier is safe to share between threads and survives
    the manager re-executing itself.
    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
        send_timeout: float = _DEFAULT_SEND_TIMEOUT,
    ) -> None:
        """Build a notifier for `address` (None disables it); prefer `from_env`."""
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._send_timeout = send_timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (default: os.environ)."""
        source: Mapping[str, str] = os.environ if env is None else env
        return cls(
            address=_socket_address(source.get("NOTIFY_SOCKET")),
            watchdog_usec=_watchdog_usec(source),
        )

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured."""
        return self._address is not None

    @property
    def watchdog_usec(self) -> int | None:
        """The watchdog timeout systemd set for this process, in microseconds."""
        return self._watchdog_usec

    def watchdog_interval(self) -> float | None:
        """Seconds between `WATCHDOG=1` pings (half the timeout), or None without a watchdog."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def send(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines as one datagram; True if the manager was reached.

        Raises ValueError for a malformed line: that is a bug in the caller,
        unlike a socket error, which is only logged.
        """
        if not lines:
            raise ValueError("nothing to send")
        payload = "\n".join(_check_line(line) for line in lines)
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never hold the event loop for long if the manager is too
                # busy to drain its queue.
                sock.settimeout(self._send_timeout)
                sock.sendto(payload.encode("utf-8"), self._address)
        except OSError as exc:
            logger.debug("sd_notify failed: %s", exc)
            return False
        return True

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` fields as one datagram, e.g. `notify(READY=1, STATUS="up")`.

        Raises ValueError for a malformed field and TypeError for a bool value
        (`READY=True` would send the word "True").
        """
        lines = []
        for key, value in fields.items():
            if isinstance(value, bool):
                raise TypeError(f"{key}: pass 1, not a bool")
            lines.append(f"{key}={value}")
        return self.send(*lines)

    def ready(self) -> bool:
        """Startup finished: `systemctl start` returns and dependents start."""
        return self.send("READY=1")

    def reloading(self, monotonic_usec: int | None = None) -> bool:
        """A reload began; send `ready()` when it is done.

        systemd >= 253 wants the CLOCK_MONOTONIC time of the request alongside
        (default: now); older versions ignore the extra field.
        """
        usec = time.monotonic_ns() // 1000 if monotonic_usec is None else monotonic_usec
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown began: the manager stops waiting for watchdog pings."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """Free-form status for `systemctl status`: one line, at most 256 characters."""
        # Session titles end up here: untrusted text must not break the
        # datagram (newlines start a new field, a NUL voids the whole message).
        line = " ".join(text.replace("\0", " ").splitlines())
        return self.send(f"STATUS={line[:STATUS_MAX_CHARS]}")

    def watchdog(self) -> bool:
        """Keep-alive ping; send it every `watchdog_interval()` seconds."""
        return self.send("WATCHDOG=1")

    def watchdog_if_healthy(self, progress: ProgressWatchdog, now: float) -> bool:
        """Ping only while every component makes progress; True if a ping was sent.

        When a component stalls, the reason goes to the log and to `STATUS=`,
        so `systemctl status` names the culprit before the watchdog fires.
        """
        ok, reason = progress.healthy(now)
        if ok:
            return self.watchdog()
        logger.warning("withholding the watchdog ping: %s", reason)
        self.status(f"stalled: {reason}")
        return False


class ProgressWatchdog:
    """Tracks the last beat of each registered component against a stall limit.

    Times are seconds on one monotonic clock that the caller reads: the class
    holds no clock, so tests drive it with plain numbers. A component must beat
    at least every `stall_after` seconds, idle or not, to count as alive.
    """

    def __init__(self, stall_after: float) -> None:
        """Consider a component stalled when its last beat is older than `stall_after`."""
        if stall_after <= 0:
            raise ValueError("stall_after must be positive")
        self._stall_after = stall_after
        self._last: dict[str, float] = {}
        # Beats may come from the event loop and from worker threads.
        self._lock = threading.Lock()

    @property
    def stall_after(self) -> float:
        """Seconds without a beat after which a component counts as stalled."""
        return self._stall_after

    def register(self, component: str, now: float) -> None:
        """Start watching `component`; its grace period starts at `now`."""
        with self._lock:
            self._last[component] = now

    def beat(self, component: str, now: float) -> None:
        """Record progress of a registered `component` at `now`.

        Raises KeyError for a name never registered: a misspelt beat must fail
        loudly rather than leave the real component to be reported stalled.
        """
        with self._lock:
            if component not in self._last:
                raise KeyError(f"unregistered component {component!r}")
            self._last[component] = max(self._last[component], now)

    def healthy(self, now: float) -> tuple[bool, str]:
        """(True, summary) if every component beat within `stall_after` of `now`.

        Otherwise (False, reason) naming each stalled component and how long it
        has been silent. With no component registered there is nothing to
        wait for, which counts as healthy.
        """
        with self._lock:
            last = dict(self._last)
        stalled = sorted(
            (name, now - at) for name, at in last.items() if now - at > self._stall_after
        )
        if stalled:
            reason = "; ".join(
                f"{name} made no progress for {age:.1f}s (limit {self._stall_after:g}s)"
                for name, age in stalled
            )
            return False, reason
        if not last:
            return True, "no components registered"
        return True, "progressing: " + ", ".join(sorted(last))
