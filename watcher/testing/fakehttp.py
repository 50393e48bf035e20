"""Loopback HTTP servers and fault injection shared by the simulator and fake sinks.

The simulator (`watcher.testing.sim`) and the fake Slack / webhook sinks (`watcher.testing.sinks`)
are real HTTP servers on 127.0.0.1, used by `demo`, the tests and the benchmarks.
A `FaultPlan` lets a test make the next requests to a path fail in a chosen way.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class Fault(StrEnum):
    """Ways a fake server can misbehave on one request."""

    HTTP_500 = "http_500"
    HTTP_502_HTML = "http_502_html"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    HTTP_429_RETRY_AFTER = "http_429_retry_after"
    TRUNCATED_JSON = "truncated_json"
    GARBAGE = "garbage"
    STALL = "stall"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class FaultRule:
    """Apply `fault` to the next `times` requests whose path starts with `path_prefix`.

    `times=-1` applies it until the plan is cleared; `exact=True` matches only
    the path itself, whatever its query (the list, not the sessions below it).
    """

    fault: Fault
    path_prefix: str = ""
    times: int = 1
    retry_after: str = "1"
    stall_seconds: float = 30.0
    exact: bool = False


class FaultPlan:
    """A thread-safe list of pending faults that a fake server consults per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[list[Any]] = []  # [rule, remaining]
        self.applied: deque[tuple[str, Fault]] = deque(maxlen=1000)
        self.closing = threading.Event()

    def add(self, rule: FaultRule) -> None:
        """Queue a fault; rules apply in the order they were added."""
        with self._lock:
            self._rules.append([rule, rule.times])

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._rules.clear()

    def take(self, path: str) -> FaultRule | None:
        """Consume and return the first pending fault that matches `path`, if any."""
        with self._lock:
            for entry in self._rules:
                rule, remaining = entry
                if (
                    path.partition("?")[0] == rule.path_prefix
                    if rule.exact
                    else path.startswith(rule.path_prefix)
                ):
                    if remaining > 0:
                        entry[1] = remaining - 1
                        if entry[1] == 0:
                            self._rules.remove(entry)
                    self.applied.append((path, rule.fault))
                    return rule  # type: ignore[no-any-return]
        return None


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    """Write a complete JSON response."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _send_raw(
    handler: BaseHTTPRequestHandler,
    status: int,
    content_type: str,
    data: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def _error_body(status: int, title: str) -> dict[str, Any]:
    return {"detail": f"simulated {title.lower()}", "status": status, "title": title}


def apply_fault(handler: BaseHTTPRequestHandler, rule: FaultRule, closing: threading.Event) -> None:
    """Answer the current request the faulty way `rule` describes."""
    fault = rule.fault
    if fault is Fault.HTTP_500:
        send_json(handler, 500, _error_body(500, "Internal Server Error"))
    elif fault is Fault.HTTP_502_HTML:
        _send_raw(handler, 502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>")
    elif fault is Fault.HTTP_503:
        send_json(handler, 503, _error_body(503, "Service Unavailable"))
    elif fault is Fault.HTTP_429:
        send_json(
            handler,
            429,
            {**_error_body(429, "Too Many Requests"), "ok": False, "error": "ratelimited"},
        )
    elif fault is Fault.HTTP_429_RETRY_AFTER:
        send_json(
            handler,
            429,
            {**_error_body(429, "Too Many Requests"), "ok": False, "error": "ratelimited"},
            headers={"Retry-After": rule.retry_after},
        )
    elif fault is Fault.TRUNCATED_JSON:
        _send_raw(handler, 200, "application/json", b'{"sessionId": "abc", "status": "ru')
    elif fault is Fault.GARBAGE:
        _send_raw(handler, 200, "application/json", b"\x00\xffnot json at all\x13")
    elif fault is Fault.STALL:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "4096")
        handler.end_headers()
        handler.wfile.write(b'{"partial": ')
        handler.wfile.flush()
        closing.wait(rule.stall_seconds)
        handler.close_connection = True
    elif fault is Fault.RESET:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-response are part of the fault tests, not errors.
        return


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with an ephemeral port.

    `handler_factory` builds the request handler class; the server object is
    reachable from handlers as `self.server.owner`.
    """

    def __init__(self, handler: Callable[..., BaseHTTPRequestHandler], port: int = 0) -> None:
        self.faults = FaultPlan()
        self._server = _QuietServer(("127.0.0.1", port), handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._scheme = "http"

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Speak TLS on the listening socket with `context` (call before `start`)."""
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. `http://127.0.0.1:43121`."""
        return f"{self._scheme}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Serve in a background thread; returns self for chaining."""
        # serve_forever checks for shutdown every poll interval (0.5 s by default):
        # a short one keeps every test's teardown quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; stalled responses are cut short."""
        self.faults.closing.set()
        if self._thread is not None:  # shutdown() waits forever for a loop never started
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FakeHandler(BaseHTTPRequestHandler):
    """Base handler: quiet logs, body reading, and fault injection before routing."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle each keep-alive
    # request would wait ~40 ms for the delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    @property
    def owner(self) -> Any:
        """The `LoopbackServer` subclass instance that serves this request."""
        return self.server.owner  # type: ignore[attr-defined]

    def read_body(self) -> bytes:
        """Read the request body announced by Content-Length."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def injected_fault(self) -> bool:
        """Apply a pending fault for this path; True when the request was answered by it."""
        rule = self.owner.faults.take(self.path)
        if rule is None:
            return False
        self.read_body()
        apply_fault(self, rule, self.owner.faults.closing)
        return True
