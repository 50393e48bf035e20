"""A TCP proxy on 127.0.0.1 that a test can pause (a network that stops answering) or
cut (every connection through it reset), between a daemon and PostgreSQL.

Threads, not the event loop: subprocess tests and in-process async tests use it
alike. While paused, bytes are read on both sides (the kernel acknowledges them,
as a half-dead network path does) but held back until `resume`; new connections
are accepted and held the same way.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; `pause`, `resume`, `cut`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def url_for(self, url: str) -> str:
        """`url` (a libpq URL or conninfo string) pointed at the proxy."""
        params = conninfo_to_dict(url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    def pause(self) -> None:
        """Stop forwarding in both directions (connections stay open)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again, held bytes first."""
        self._flowing.set()

    def cut(self) -> int:
        """Reset every connection through the proxy now; new ones are still accepted."""
        with self._lock:
            victims = list(self._sockets)
            self._sockets.clear()
        for sock in victims:
            _reset(sock)
        return len(victims) // 2

    def close(self) -> None:
        """Stop accepting and reset every connection."""
        self._closed = True
        self._flowing.set()
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
                self.accepted += 1
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close `sock` with a RST (linger 0), as a broken path or a killed peer does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wakes the pump blocked in recv()
    except OSError:
        pass
    sock.close()
