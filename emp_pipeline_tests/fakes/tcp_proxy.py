"""A TCP forwarder on loopback whose link can be cut and restored: a Redis outage for one client only.

The shared Redis keeps running for everyone else; a client pointed at the proxy sees connections reset and
refused while it is cut, and the same server (with the same data) once it is restored.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CuttableTcpProxy:
    """`with CuttableTcpProxy("127.0.0.1", 6379) as proxy:`, connect to `proxy.port`, `cut()`, `restore()`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._cut = False
        self._open: list[socket.socket] = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until restore()."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def __enter__(self) -> CuttableTcpProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self.cut()
        _close(self._listener)
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                _close(client)  # the client sees its connection reset: Redis is "down"
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.extend((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
