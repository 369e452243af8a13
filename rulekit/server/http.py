"""The daemon's HTTP server: uvicorn, with the limits a server facing the internet needs.

uvicorn has a keep-alive timeout but no deadline for reading a request, and its concurrency
limit answers 503 to everyone once slow connections fill it. So the HTTP protocol is wrapped
(:func:`guarded_protocol`) to add, per connection:

* a **header deadline**: a request head (request line and headers) must arrive complete within
  ``header_timeout`` seconds of the connection opening or of the previous response ending,
  otherwise the connection is closed;
* a **body deadline**: the body must arrive within ``body_timeout`` seconds of its head;
* a **send deadline**: a connection whose client takes none of an answer being sent for
  ``send_timeout`` seconds (the answer waits for the client's window: a client that never
  reads, pipelining requests to fill it) is cut off;
* a **head budget**: a request line and headers over ``max_header_bytes`` are answered 431
  and the connection closed. The HTTP parser itself has no limit, and it gathers a header
  or a URL that arrives in many reads by concatenating them (time quadratic in its length,
  on the event loop): the budget is applied before the parser sees the bytes;
* a **connection limit** (``max_connections``, kept below the process's file-descriptor limit):
  a connection beyond it takes the place of the connection that has waited longest for its
  request head (an idle keep-alive connection or a slow one), or, when none waits for a head,
  of one whose client takes none of its answer, or of the one that has waited longest for the
  rest of a request body, so slow connections never lock out a client that sends its request
  at once (a body trickled to a route that reads it before anything else, the console's
  sign-in, holds no place either); when every connection is busy with a whole request, the
  new one is answered 503 and closed.

:class:`DaemonServer` also ends the console's live streams as soon as the shutdown begins
(a stream never ends by itself, so uvicorn would wait out its graceful timeout for each one).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from rulekit.config import ServerSettings

if TYPE_CHECKING:
    from rulekit.server.daemon import Daemon

log = logging.getLogger("rulekit.server")

SHUTDOWN_GRACE = 15.0
"""Seconds uvicorn waits, at shutdown, for requests in progress before cancelling them."""
FD_RESERVE = 256
"""File descriptors kept for everything but client connections (store, outgoing calls, logs)."""
LINGER = 1.0
"""Seconds a refused connection stays open for its 503 to be read."""
MAX_LINGERING = 64
"""Refused connections left to linger at once (more are closed at once)."""
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n"
    b"connection: close\r\nretry-after: 1\r\n\r\ntoo many connections"
)


def head_too_large(limit: int) -> bytes:
    """The 431 answered to a request whose line and headers are over ``limit`` bytes."""
    body = b'{"error":"the request line and headers are over %d bytes"}' % limit
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )


def connection_limit(wanted: int, reserve: int = FD_RESERVE) -> int:
    """The connection limit this process can hold: ``wanted``, raising the soft limit of open
    files towards the hard one when needed, and never above the soft limit less ``reserve``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + reserve
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))


class ConnectionGuard:
    """The open connections of one server, and those waiting for a request head (oldest
    first), shared by its protocol instances."""

    def __init__(
        self,
        limit: int,
        header_timeout: float,
        body_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        head_limit: int = 64 * 1024,
        send_timeout: float = 30.0,
    ) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.head_limit = head_limit
        self.head_too_large = head_too_large(head_limit)
        self.clock = clock
        self.open: set[Any] = set()
        self.waiting: OrderedDict[Any, None] = OrderedDict()
        self.bodies: OrderedDict[Any, None] = OrderedDict()
        """Connections whose request's head came but not all of its body (oldest first)."""
        self.stalled: OrderedDict[Any, None] = OrderedDict()
        """Connections whose client takes none of the answer being sent (oldest first)."""
        self.evicted = 0
        self.refused = 0
        self.lingering = 0
        self.expired = 0
        self.oversized = 0

    def admit(self, connection: Any) -> bool:
        """Count a new connection in; ``False`` when it must be refused."""
        if len(self.open) >= self.limit:
            # one waiting for a head first, else for its client to read, else for a body's rest
            slowest = self.waiting or self.stalled or self.bodies
            if not slowest:
                self.refused += 1
                return False
            oldest, _ = slowest.popitem(last=False)
            stalled = slowest is self.stalled
            self.forget(oldest)
            self.evicted += 1
            if stalled:  # (close would wait for the answer to be taken: forever)
                oldest.transport.abort()
            else:
                oldest.transport.close()
        self.open.add(connection)
        return True

    def forget(self, connection: Any) -> None:
        self.open.discard(connection)
        self.waiting.pop(connection, None)
        self.bodies.pop(connection, None)
        self.stalled.pop(connection, None)


class _Guarded:
    """Mixed into uvicorn's HTTP protocol class: deadlines and the connection limit."""

    guard: ConnectionGuard
    counts_heads = True
    """Whether the head budget is applied here (h11, the fallback, applies it itself, and has
    no parser callbacks to tell a head's end)."""
    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._seen: Any = None
        self._lingering = False
        self._in_body = False  # between a head's end and its message's end
        self._head_bytes = 0  # bytes received towards the current (or next) head
        self._refused = not self.guard.admit(self)
        if self._refused:
            self._refuse(transport)
            return
        self._await_head()

    def _refuse(self, transport: asyncio.Transport, answer: bytes = BUSY) -> None:
        """Answer ``answer`` (a 503, or the 431 of a head over the budget) and close. The
        connection lingers (dropping what the client sends, up to :data:`LINGER` seconds) so
        that the answer is read rather than lost to a reset; when many linger already, it is
        closed at once."""
        transport.write(answer)
        if self.guard.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.guard.lingering += 1
        self._lingering = True
        self._timer = self.loop.call_later(LINGER, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self._send_resumed()
        if getattr(self, "_lingering", False):
            self._lingering = False
            self.guard.lingering -= 1
        self.guard.forget(self)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: dropped
        if not self.counts_heads:
            self._parse(data)
            return
        limit = self.guard.head_limit
        while data:
            if self._in_body:
                piece, data = data, b""
            else:  # the parser is handed no more of a head than the budget
                room = limit - self._head_bytes
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            self._parse(piece)
            if self.transport.is_closing():
                return
            if not self._in_body and self._head_bytes >= limit:
                self._head_over_budget()
                return

    def pause_writing(self) -> None:
        """The answer waits for the client to take what was sent: it holds its place for no
        one (:meth:`ConnectionGuard.admit`), and is cut off unless it takes some within
        ``send_timeout``."""
        super().pause_writing()  # type: ignore[misc]
        if self._refused or self._send_timer is not None:
            return
        self.guard.stalled[self] = None
        self._send_timer = self.loop.call_later(self.guard.send_timeout, self._send_expired)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._send_resumed()

    def _send_resumed(self) -> None:
        timer = getattr(self, "_send_timer", None)
        if timer is not None:
            timer.cancel()
            self._send_timer = None
        self.guard.stalled.pop(self, None)

    def _send_expired(self) -> None:
        self._send_timer = None
        self.guard.expired += 1
        self.guard.forget(self)
        self.transport.abort()  # (close would wait for the answer to be taken: forever)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_bytes = 0
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_bytes = 0  # (the next head may begin in the same read: counted from the next)
        super().on_message_complete()  # type: ignore[misc]

    def _head_over_budget(self) -> None:
        """431 and close; once the response under way is sent, when a pipelined request's
        head came in meanwhile (what arrives is dropped until then)."""
        self.guard.oversized += 1
        self.guard.forget(self)
        self._cancel()
        self._refused = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._refuse(self.transport, self.guard.head_too_large)

    def _parse(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen:  # a request head is complete
            self._seen = cycle
            self.guard.waiting.pop(self, None)
            self._cancel()
            if cycle.more_body:
                self._arm(self.guard.body_timeout)
                self.guard.bodies[self] = None
        elif cycle is not None and not cycle.more_body and self not in self.guard.waiting:
            self._cancel()  # the body is complete
        if cycle is not None and not cycle.more_body:
            self.guard.bodies.pop(self, None)  # (complete: busy with its request, kept)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if self.transport.is_closing():
            return
        if self._refused:  # the next head went over the budget while this response was sent
            self._refuse(self.transport, self.guard.head_too_large)
        elif self.cycle is None or self.cycle.response_complete:
            self._await_head()

    def _await_head(self) -> None:
        self.guard.bodies.pop(self, None)  # (answered: its body's rest is dropped as it comes)
        self.guard.waiting[self] = None
        self.guard.waiting.move_to_end(self)
        self._arm(self.guard.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._cancel()
        self._timer = self.loop.call_later(seconds, self._expire)

    def _cancel(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self.guard.expired += 1
        self.guard.forget(self)
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools', else h11's) with ``guard``'s limits."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # pragma: no cover - httptools is a dependency
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

        return type(
            "GuardedHTTPProtocol", (_Guarded, Base), {"guard": guard, "counts_heads": False}
        )
    return type("GuardedHTTPProtocol", (_Guarded, Base), {"guard": guard})


class DaemonServer(uvicorn.Server):
    """uvicorn's server that calls ``on_shutdown`` (e.g. closing the live feed, which ends the
    console's streams) as soon as the shutdown begins, before it waits for requests."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets: Any = None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)


def server_config(app: Any, settings: ServerSettings, host: str, port: int) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the limits of ``settings`` (``server:``)."""
    limit = connection_limit(settings.max_connections)
    if limit < settings.max_connections:
        log.warning(
            "server: at most %d connections (max_connections is %d, but the process may open "
            "only %d files)",
            limit,
            settings.max_connections,
            limit + FD_RESERVE,
        )
    guard = ConnectionGuard(
        limit,
        settings.header_timeout,
        settings.body_timeout,
        head_limit=settings.max_header_bytes,
        send_timeout=settings.send_timeout,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(guard),
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="none",  # nothing here speaks WebSocket; an upgrade would leave the guard's count
        proxy_headers=False,  # the app trusts X-Forwarded-* from server.trusted_proxies only
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE),
        backlog=2048,  # the kernel's queue of connections not yet accepted: no descriptors
        server_header=False,
        h11_max_incomplete_event_size=settings.max_header_bytes,  # (the fallback parser's own)
    )


def build_server(daemon: Daemon, host: str | None, port: int | None) -> DaemonServer:
    """The server of ``rulekit run``: the daemon's app with the config's limits; its shutdown
    ends the live streams at once."""
    settings = daemon.snapshot.config.raw.server
    config = server_config(
        daemon.app, settings, host or settings.host, settings.port if port is None else port
    )
    return DaemonServer(config, daemon.feed.close)
