"""A small HTTP/1.1 server on the daemon's own event loop: /metrics, /healthz, /readyz.

It runs as tasks in the daemon's task group (anyio), not in a thread, so
`/healthz` answering proves the loop that polls and delivers is alive. HTTP
parsing is h11's; this module adds the limits that keep a slow or hostile
client from costing more than a bounded slice of the loop:

- at most `max_connections` connections at once; further ones are not
  accepted until a slot frees, so they wait in the kernel's backlog and a
  flood of connections costs the loop nothing;
- a request's head must arrive whole within `request_timeout` seconds (a
  client trickling bytes, slowloris-style, is cut off) and within
  `max_header_bytes`; a body is never read;
- the answer must leave within `write_timeout` seconds, then the
  connection closes (one request per connection, `Connection: close`).

Route handlers are plain functions that answer from memory: a request
never waits for the database, a poll or a send.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import h11
from anyio.abc import SocketAttribute, SocketListener, SocketStream

log = logging.getLogger("watcher.ops.endpoint")

MAX_CONNECTIONS = 32
MAX_HEADER_BYTES = 8192
REQUEST_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
ACCEPT_RETRY = 0.1


class EndpointError(Exception):
    """The endpoint cannot listen where it was told to."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler sees of a request."""

    method: str
    path: str
    accept: str | None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete answer."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Response]


def bound_port(listener: SocketListener) -> int:
    """The port `listener` is bound to."""
    return int(listener.extra(SocketAttribute.local_port))  # noqa: S610 - anyio, not Django


def text(status: int, line: str) -> Response:
    """A one-line plain-text answer."""
    return Response(status, (line + "\n").encode())


class Endpoint:
    """Serves `routes` (path -> handler) until cancelled."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self._routes = dict(routes)
        self._max_connections = max_connections
        self._max_header_bytes = max_header_bytes
        self._request_timeout = request_timeout
        self._write_timeout = write_timeout
        self.active = 0
        self._slots = anyio.Semaphore(max_connections)

    async def listen(self, host: str, port: int) -> SocketListener:
        """Bind `host:port` (port 0: any free one); EndpointError says why it cannot."""
        try:
            multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as error:
            hint = ""
            if error.errno in (errno.EPERM, errno.EACCES):
                hint = (
                    " (the shipped systemd unit allows binding port 9464 only: "
                    "change SocketBindAllow= with a drop-in)"
                )
            raise EndpointError(
                f"cannot listen on {host}:{port}: {error.strerror or error}{hint}"
            ) from None
        listener = multi.listeners[0]
        assert isinstance(listener, SocketListener)
        return listener

    async def serve(self, listener: SocketListener) -> None:
        """Serve connections from `listener` until cancelled; closes it at the end."""
        async with listener, anyio.create_task_group() as tg:
            while True:
                await self._slots.acquire()  # at the cap, new connections wait unaccepted
                try:
                    stream = await listener.accept()
                except OSError as error:
                    self._slots.release()
                    # Out of file descriptors, say: the listener survives, and
                    # the loop keeps serving polls in the meantime.
                    log.warning("endpoint cannot accept a connection: %s", error.strerror)
                    await anyio.sleep(ACCEPT_RETRY)
                    continue
                except BaseException:
                    self._slots.release()
                    raise
                self.active += 1
                tg.start_soon(self._serve_one, stream)

    async def _serve_one(self, stream: SocketStream) -> None:
        try:
            await self._exchange(stream)
        except Exception:  # one connection must never take the endpoint down
            log.debug("endpoint connection failed", exc_info=True)
        finally:
            self.active -= 1
            self._slots.release()
            with anyio.move_on_after(0):
                await stream.aclose()

    async def _exchange(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header_bytes)
        request: h11.Request | None = None
        response: Response | None = None
        with anyio.move_on_after(self._request_timeout):
            try:
                request = await _read_request(conn, stream)
            except h11.RemoteProtocolError as error:
                response = text(error.error_status_hint, "bad request")
        if request is None and response is None:
            return  # timed out or hung up: nothing worth answering
        head_only = False
        if request is not None:
            method = request.method.decode("ascii", "replace")
            head_only = method == "HEAD"
            response = self._answer(request, method)
        assert response is not None
        with anyio.move_on_after(self._write_timeout):
            await stream.send(_encode(conn, response, head_only=head_only))

    def _answer(self, request: h11.Request, method: str) -> Response:
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        handler = self._routes.get(path)
        if handler is None:
            return text(404, "not found")
        if method not in ("GET", "HEAD"):
            return text(405, "method not allowed")
        accept = next((v.decode("latin-1") for k, v in request.headers if k == b"accept"), None)
        try:
            return handler(Request(method, path, accept))
        except Exception:
            log.exception("endpoint handler for %s failed", path)
            return text(500, "internal error")


async def _read_request(conn: h11.Connection, stream: SocketStream) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return None
            conn.receive_data(data)
            continue
        return None  # ConnectionClosed or PAUSED before any request


def _encode(conn: h11.Connection, response: Response, *, head_only: bool) -> bytes:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        ("Connection", "close"),
    ]
    with contextlib.suppress(h11.LocalProtocolError):
        # A request h11 refused leaves the connection in an error state in which
        # it will not frame a response; fall back to writing one by hand.
        out = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
        if not head_only:
            out += conn.send(h11.Data(data=response.body)) or b""
        return out + (conn.send(h11.EndOfMessage()) or b"")
    head = f"HTTP/1.1 {response.status} \r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("latin-1") + b"\r\n" + response.body
