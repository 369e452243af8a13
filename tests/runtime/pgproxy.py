"""A TCP proxy in front of the test PostgreSQL server that can hold one daemon up at a chosen
point: once a connection through it sent a statement holding ``marker`` (with ``rows``, one
that changed rows) and then its COMMIT, the server's answer to that connection is held back
until :meth:`PgProxy.release` (the transaction is committed in the database; the daemon waits,
as if it froze right after).
The daemon's URL must say ``sslmode=disable`` so that the statements pass in clear."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class PgProxy:
    def __init__(self, url: str, marker: bytes, *, rows: bool = False) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.marker = marker
        self.rows = rows
        self.caught = threading.Event()
        """A connection sent the marked statement and its COMMIT: its answers are held."""
        self._release = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
        query = f"{parts.query}&sslmode=disable" if parts.query else "sslmode=disable"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        """Let the held answers through."""
        self._release.set()

    def close(self) -> None:
        self._release.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            state = _Connection()
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: _Connection) -> None:
        tail = b""
        while data := _recv(client):
            seen = tail + data
            tail = seen[-len(self.marker) :]
            if not self.caught.is_set():
                if self.marker in seen:
                    state.armed, state.changed = True, False
                elif state.armed and b"COMMIT" in seen:
                    state.armed = False
                    if state.changed or not self.rows:
                        state.held.set()  # before it goes: its answer is held
                        self.caught.set()
            with contextlib.suppress(OSError):
                server.sendall(data)
        _shut(server)

    def _down(self, server: socket.socket, client: socket.socket, state: _Connection) -> None:
        while data := _recv(server):
            if state.armed and _CHANGED.search(data):
                state.changed = True
            if state.held.is_set():
                self._release.wait()
            with contextlib.suppress(OSError):
                client.sendall(data)
        _shut(client)


_CHANGED = re.compile(rb"(UPDATE|INSERT 0) [1-9]")
"""A statement's CommandComplete tag saying it changed rows."""


class _Connection:
    """What the proxy knows of one connection."""

    def __init__(self) -> None:
        self.armed = False
        """It sent the marked statement, not its COMMIT yet."""
        self.changed = False
        """The marked statement changed rows."""
        self.held = threading.Event()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
