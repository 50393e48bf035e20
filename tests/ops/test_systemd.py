"""sd_notify over real datagram sockets, the watchdog environment, and ProgressWatchdog."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from watcher.ops.systemd import STATUS_MAX_CHARS, ProgressWatchdog, SystemdNotifier


@dataclass(frozen=True)
class Listener:
    """A bound datagram socket standing in for the service manager's notify socket."""

    sock: socket.socket
    notify_socket: str  # the value systemd would put in $NOTIFY_SOCKET

    def receive(self) -> bytes:
        """The next datagram: AF_UNIX queues it before sendto() returns, so never wait."""
        return self.sock.recv(65536)

    def pending(self) -> bytes | None:
        """A queued datagram, or None if nothing was sent."""
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            return None


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Iterator[Listener]:
    """A notify socket bound to a file path or to an abstract name."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Non-blocking: a datagram that is not there yet was never sent.
        sock.setblocking(False)
        if request.param == "path":
            # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer.
            with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
                path = str(Path(tmp) / "notify")
                sock.bind(path)
                yield Listener(sock, path)
        else:
            name = f"factory-watcher-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield Listener(sock, "@" + name)


Call = Callable[[SystemdNotifier], object]


def notifier_for(listener: Listener) -> SystemdNotifier:
    """A notifier built the way the daemon builds it, from the environment."""
    return SystemdNotifier.from_env({"NOTIFY_SOCKET": listener.notify_socket})


@pytest.mark.parametrize(
    ("call", "payload"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.reloading(123456789), b"RELOADING=1\nMONOTONIC_USEC=123456789"),
        (lambda n: n.status("polling 3 sessions"), b"STATUS=polling 3 sessions"),
        (lambda n: n.status("line one\nline two\r\nthree"), b"STATUS=line one line two three"),
        (lambda n: n.status("a\0b"), b"STATUS=a b"),
        (lambda n: n.status("ü"), "STATUS=ü".encode()),
        (lambda n: n.notify(READY=1, STATUS="up"), b"READY=1\nSTATUS=up"),
        (lambda n: n.notify(EXTEND_TIMEOUT_USEC=5_000_000), b"EXTEND_TIMEOUT_USEC=5000000"),
        (lambda n: n.send("READY=1", "STATUS=a=b"), b"READY=1\nSTATUS=a=b"),
    ],
    ids=[
        "ready",
        "stopping",
        "watchdog",
        "reloading",
        "status",
        "status-newlines",
        "status-nul",
        "status-utf8",
        "notify-fields",
        "notify-int",
        "send-lines",
    ],
)
def test_sends_exact_payload(listener: Listener, call: Call, payload: bytes) -> None:
    """Each helper sends one datagram with exactly the protocol's KEY=VALUE lines."""
    assert call(notifier_for(listener)) is True
    assert listener.receive() == payload
    assert listener.pending() is None


def test_status_is_capped(listener: Listener) -> None:
    """STATUS= carries at most 256 characters of the text."""
    notifier_for(listener).status("x" * 1000)
    assert listener.receive() == b"STATUS=" + b"x" * STATUS_MAX_CHARS


def test_reloading_defaults_to_now_on_the_monotonic_clock(listener: Listener) -> None:
    """Without an argument, MONOTONIC_USEC is CLOCK_MONOTONIC at the call, in microseconds."""
    low = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for(listener).reloading()
    high = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = listener.receive().decode().split("\n")
    key, _, value = second.partition("=")
    assert (first, key) == ("RELOADING=1", "MONOTONIC_USEC")
    assert low <= int(value) <= high


def test_reads_os_environ_by_default(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    """from_env() with no argument reads the process environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", listener.notify_socket)
    assert SystemdNotifier.from_env().ready() is True
    assert listener.receive() == b"READY=1"


@pytest.mark.parametrize(
    "env",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"}, {"NOTIFY_SOCKET": "vsock:2:1"}],
    ids=["unset", "empty", "relative", "vsock"],
)
def test_noop_without_a_usable_socket(env: dict[str, str]) -> None:
    """Outside systemd every call is a no-op that returns False."""
    notifier = SystemdNotifier.from_env(env)
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert notifier.notify(STATUS="x") is False
    assert notifier.watchdog() is False


@pytest.mark.parametrize(
    "make_target",
    [
        lambda tmp: str(tmp / "missing"),
        lambda tmp: "@factory-watcher-test-nobody-" + uuid.uuid4().hex,
    ],
    ids=["missing-path", "unbound-abstract"],
)
def test_socket_errors_are_logged_not_raised(
    make_target: Callable[[Path], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A socket nobody listens on gives False and a debug log line, never an exception."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:
        notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": make_target(Path(tmp))})
        with caplog.at_level(logging.DEBUG, logger="watcher.ops.systemd"):
            assert notifier.ready() is False
    assert any(
        r.levelno == logging.DEBUG and "sd_notify failed" in r.getMessage() for r in caplog.records
    )


def test_socket_of_wrong_type_is_an_error_not_an_exception() -> None:
    """A stream socket at the address refuses the datagram; the notifier shrugs."""
    with (
        tempfile.TemporaryDirectory(prefix="sdn") as tmp,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream,
    ):
        path = str(Path(tmp) / "stream")
        stream.bind(path)
        stream.listen()
        assert SystemdNotifier.from_env({"NOTIFY_SOCKET": path}).ready() is False


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda n: n.send(), ValueError),
        (lambda n: n.send("READY"), ValueError),
        (lambda n: n.send("ready=1"), ValueError),
        (lambda n: n.send("=1"), ValueError),
        (lambda n: n.send("STATUS=a\nb"), ValueError),
        (lambda n: n.send("STATUS=a\0b"), ValueError),
        (lambda n: n.notify(**{"BAD KEY": 1}), ValueError),
        (lambda n: n.notify(READY=True), TypeError),
    ],
    ids=["nothing", "no-equals", "lower-case", "empty-key", "newline", "nul", "space", "bool"],
)
def test_malformed_fields_are_caller_bugs(
    listener: Listener, call: Call, error: type[Exception]
) -> None:
    """A malformed line raises, whether or not a socket is configured, and sends nothing."""
    for notifier in (notifier_for(listener), SystemdNotifier.from_env({})):
        with pytest.raises(error):
            call(notifier)
    assert listener.pending() is None


OTHER_PID = str(os.getpid() + 1)


@pytest.mark.parametrize(
    ("env", "usec", "interval"),
    [
        ({}, None, None),
        ({"WATCHDOG_USEC": "60000000"}, 60_000_000, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 60_000_000, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": OTHER_PID}, None, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "self"}, None, None),
        ({"WATCHDOG_USEC": "1"}, 1, 0.0000005),
        ({"WATCHDOG_USEC": "0"}, None, None),
        ({"WATCHDOG_USEC": "-5"}, None, None),
        ({"WATCHDOG_USEC": "sixty"}, None, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None, None),
    ],
    ids=[
        "unset",
        "usec-only",
        "our-pid",
        "other-pid",
        "garbage-pid",
        "tiny",
        "zero",
        "negative",
        "garbage-usec",
        "pid-only",
    ],
)
def test_watchdog_environment(
    env: dict[str, str], usec: int | None, interval: float | None
) -> None:
    """WATCHDOG_USEC counts only for this process; the ping period is half of it."""
    notifier = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert notifier.watchdog_usec == usec
    assert notifier.watchdog_interval() == interval


# ---- ProgressWatchdog --------------------------------------------------------

Step = tuple[str, str, float]  # (action, component, now): action is "register" or "beat"


@pytest.mark.parametrize(
    ("steps", "now", "healthy", "reason"),
    [
        ([], 1000.0, True, "no components registered"),
        ([("register", "scheduler", 0.0)], 45.0, True, "progressing: scheduler"),
        (
            [("register", "scheduler", 0.0)],
            45.5,
            False,
            "scheduler made no progress for 45.5s (limit 45s)",
        ),
        (
            [("register", "scheduler", 0.0), ("beat", "scheduler", 40.0)],
            80.0,
            True,
            "progressing: scheduler",
        ),
        (
            [
                ("register", "scheduler", 0.0),
                ("register", "delivery", 0.0),
                ("beat", "scheduler", 50.0),
                ("beat", "delivery", 10.0),
            ],
            60.0,
            False,
            "delivery made no progress for 50.0s (limit 45s)",
        ),
        (
            [
                ("register", "scheduler", 0.0),
                ("register", "delivery", 0.0),
                ("beat", "scheduler", 50.0),
                ("beat", "delivery", 55.0),
            ],
            60.0,
            True,
            "progressing: delivery, scheduler",
        ),
        (
            [("register", "scheduler", 0.0), ("register", "delivery", 5.0)],
            100.0,
            False,
            "delivery made no progress for 95.0s (limit 45s); "
            "scheduler made no progress for 100.0s (limit 45s)",
        ),
        (
            # A late beat carrying an older timestamp does not move the clock back.
            [
                ("register", "scheduler", 0.0),
                ("beat", "scheduler", 50.0),
                ("beat", "scheduler", 1.0),
            ],
            90.0,
            True,
            "progressing: scheduler",
        ),
        (
            # Registering again restarts the grace period (e.g. a worker restarted).
            [("register", "delivery", 0.0), ("register", "delivery", 100.0)],
            120.0,
            True,
            "progressing: delivery",
        ),
    ],
    ids=[
        "nothing-registered",
        "exactly-at-the-limit",
        "just-past-the-limit",
        "recent-beat",
        "one-of-two-stalled",
        "both-recent",
        "both-stalled-sorted",
        "stale-beat-ignored",
        "re-register",
    ],
)
def test_progress_watchdog(steps: list[Step], now: float, healthy: bool, reason: str) -> None:
    """Healthy only while every component beat within stall_after; else it names the stalled."""
    progress = ProgressWatchdog(stall_after=45)
    for action, component, at in steps:
        getattr(progress, action)(component, at)
    assert progress.healthy(now) == (healthy, reason)


def test_beat_of_an_unregistered_component_raises() -> None:
    """A misspelt component name fails at once instead of hiding the real one's stall."""
    progress = ProgressWatchdog(stall_after=45)
    progress.register("scheduler", 0.0)
    with pytest.raises(KeyError, match="schedular"):
        progress.beat("schedular", 1.0)


@pytest.mark.parametrize("stall_after", [0, -1.0])
def test_stall_limit_must_be_positive(stall_after: float) -> None:
    """A zero or negative stall limit is refused."""
    with pytest.raises(ValueError, match="positive"):
        ProgressWatchdog(stall_after=stall_after)


@pytest.mark.parametrize(
    ("beat_at", "payloads"),
    [
        (50.0, [b"WATCHDOG=1"]),
        (0.0, [b"STATUS=stalled: scheduler made no progress for 60.0s (limit 45s)"]),
    ],
    ids=["healthy-pings", "stalled-withholds"],
)
def test_watchdog_if_healthy(listener: Listener, beat_at: float, payloads: list[bytes]) -> None:
    """The ping goes out only while progress is made; a stall is reported in STATUS= instead."""
    progress = ProgressWatchdog(stall_after=45)
    progress.register("scheduler", 0.0)
    progress.beat("scheduler", beat_at)
    sent = notifier_for(listener).watchdog_if_healthy(progress, now=60.0)
    assert sent is (payloads == [b"WATCHDOG=1"])
    assert [listener.receive() for _ in payloads] == payloads
    assert listener.pending() is None
