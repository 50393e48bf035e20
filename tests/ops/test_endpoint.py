"""The HTTP endpoint on the event loop: routes, and limits against slow or hostile clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketStream

from watcher.ops.endpoint import Endpoint, EndpointError, Request, Response, bound_port, text

pytestmark = pytest.mark.anyio


def routes() -> dict[str, Callable[[Request], Response]]:
    """A small route table that echoes what the handler saw."""

    def echo(request: Request) -> Response:
        return text(200, f"{request.method} {request.path} accept={request.accept}")

    def boom(request: Request) -> Response:
        raise RuntimeError("handler bug")

    return {"/echo": echo, "/boom": boom}


@asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[int]:
    """Serve `endpoint` on a free loopback port for the block; yields the port."""
    listener = await endpoint.listen("127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(endpoint.serve, listener)
        yield bound_port(listener)
        tg.cancel_scope.cancel()


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` and read until the server closes the connection."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        return await read_all(stream)


async def read_all(stream: SocketStream) -> bytes:
    """Everything the server sends until it closes."""
    chunks = []
    while True:
        try:
            chunks.append(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return b"".join(chunks)


@pytest.mark.parametrize(
    ("raw", "status", "body"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", b"200", b"GET /echo accept=None"),
        (
            b"GET /echo?x=1 HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
            b"200",
            b"GET /echo accept=text/plain",
        ),
        (b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n", b"200", b""),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404", b"not found"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", b"405", b"not allowed"),
        (b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n", b"500", b"internal error"),
        (b"NONSENSE\r\n\r\n", b"400", b"bad request"),
        (b"GET /echo HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n", b"400", b"bad request"),
    ],
    ids=["get", "query-and-accept", "head", "unknown", "post", "handler-bug", "garbage", "huge"],
)
async def test_answers(raw: bytes, status: bytes, body: bytes) -> None:
    """Each request gets one complete answer, then the connection closes."""
    async with serving(Endpoint(routes(), max_header_bytes=8192)) as port:
        answer = await exchange(port, raw)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == status
    assert b"connection: close" in head.lower()
    assert body in payload


async def test_a_slow_client_is_cut_off_and_never_holds_up_others() -> None:
    """A client trickling its request head is dropped however it paces it; others are answered."""
    endpoint = Endpoint(routes(), request_timeout=0.5)
    async with serving(endpoint) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as slow:
            await slow.send(b"GET /echo HTTP/1.1\r\n")

            async def trickle() -> None:
                # Bytes keep coming, so a per-read timeout would never fire.
                with contextlib.suppress(anyio.BrokenResourceError, OSError):
                    while True:
                        await slow.send(b"X-Slow: 1\r\n")
                        await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(trickle)
                answered = await exchange(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                assert answered.startswith(b"HTTP/1.1 200")
                with anyio.fail_after(10):
                    assert await read_all(slow) == b""
                tg.cancel_scope.cancel()
        assert endpoint.active == 0  # released before the server hung up


async def test_connections_beyond_the_cap_wait_unaccepted_until_a_slot_frees() -> None:
    """At the cap a new connection is not served until an idle one times out."""
    endpoint = Endpoint(routes(), max_connections=2, request_timeout=0.5)
    async with serving(endpoint) as port:
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(2)]
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", port) as waiting:
                await waiting.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                with anyio.move_on_after(0.2) as unanswered:
                    await waiting.receive()
                assert unanswered.cancelled_caught  # not served while both slots are taken
                for stream in idle:  # the idle ones time out, freeing their slots
                    assert await read_all(stream) == b""
                    await stream.aclose()
                answer = await read_all(waiting)
            assert endpoint.active <= 2
    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_port_in_use_is_a_clear_error() -> None:
    """Listening where something else listens raises EndpointError naming the address."""
    async with serving(Endpoint(routes())) as port:
        with pytest.raises(EndpointError, match=f"cannot listen on 127.0.0.1:{port}"):
            await Endpoint(routes()).listen("127.0.0.1", port)
