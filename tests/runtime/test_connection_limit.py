"""The connection limit of the daemon's HTTP server (:mod:`rulekit.server.http`) on a real
uvicorn on loopback: at the limit, a new connection takes the place of one still waiting for
its request head; when every connection is busy with a request, it is answered 503."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from daemons import listening_socket, wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from rulekit.config import ServerSettings
from rulekit.server.http import ConnectionGuard, DaemonServer, server_config

LIMIT = 3


async def endless(request: Request) -> Response:
    async def lines() -> AsyncIterator[str]:
        while True:
            yield "tick\n"
            await asyncio.sleep(0.2)

    return StreamingResponse(lines(), media_type="text/plain")


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


FORMS_STARTED: list[int] = []
"""One item per request /form began to read (its head has come)."""


async def form(request: Request) -> Response:
    """A route that reads its whole body before anything else (as the console's sign-in)."""
    FORMS_STARTED.append(1)
    return PlainTextResponse(f"{len(await request.body())} bytes")


async def big(request: Request) -> Response:
    return PlainTextResponse("x" * 65536)


@contextmanager
def serving(**limits: float) -> Iterator[tuple[str, ConnectionGuard]]:
    """The guarded server on loopback (``LIMIT`` connections, ``limits`` besides), and its
    guard."""
    app = Starlette(
        routes=[
            Route("/endless", endless),
            Route("/hello", hello),
            Route("/form", form, methods=["POST"]),
            Route("/big", big),
        ]
    )
    sock = listening_socket()
    port = sock.getsockname()[1]
    settings = ServerSettings(
        max_connections=LIMIT, header_timeout=30, keep_alive_timeout=30, **limits
    )
    closed = threading.Event()
    config = server_config(app, settings, "127.0.0.1", port)
    server = DaemonServer(config, closed.set)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15)
    try:
        yield f"http://127.0.0.1:{port}", config.http.guard  # type: ignore[union-attr]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert closed.is_set()  # the shutdown called on_shutdown


@pytest.fixture
def url() -> Iterator[str]:
    with serving() as (address, _):
        yield address


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(10)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` without answering (a FIN or a reset)."""
    try:
        return answer(sock) == b""
    except ConnectionResetError:
        return True


def connect(port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def busy(port: int) -> socket.socket:
    """A connection busy with an endless response (its first line has arrived)."""
    sock = connect(port, b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock


def test_a_new_connection_takes_the_place_of_a_slow_one_or_gets_503(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    hello = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    first, second = busy(port), busy(port)
    slow = connect(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    try:
        # the limit is reached: the newcomer takes the place of the slow connection
        with connect(port, hello) as new:
            assert answer(new).startswith(b"HTTP/1.1 200")
        assert closed(slow)  # by the server, without an answer
        # three connections busy with responses: the newcomer is told to come back
        with busy(port) as third, connect(port, hello) as refused:
            response = answer(refused)
            assert response.startswith(b"HTTP/1.1 503")
            assert b"retry-after: 1" in response.lower()
            assert third.recv(4096)  # the busy ones go on
    finally:
        for sock in (first, second, slow):
            sock.close()


def test_a_body_trickled_to_a_route_that_reads_it_holds_no_place(url: str) -> None:
    """A connection sending the rest of its body slowly counted as busy with a request: anyone
    could fill the limit with bodies trickled to a route that reads its body first (the
    console's sign-in, before any token is checked), each held until the body deadline, and
    every webhook was answered 503 meanwhile. Such a connection now gives its place to a new
    one; a request that came whole keeps its place."""
    port = int(url.rsplit(":", 1)[1])
    hello = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    head = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
    FORMS_STARTED.clear()
    trickling = [connect(port, head) for _ in range(LIMIT)]
    wait_for(lambda: len(FORMS_STARTED) == LIMIT)  # every head is in: each waits for its body
    try:
        with connect(port, hello) as new:
            assert answer(new).startswith(b"HTTP/1.1 200")
        readable, _, _ = select.select(trickling, [], [], 5)
        [gone] = readable  # one unfinished body gave its place, closed without an answer
        assert closed(gone)
        kept = next(sock for sock in trickling if sock is not gone)
        kept.sendall(b"c" * 998)  # a body that comes whole is read and answered
        kept.settimeout(10)
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        for sock in trickling:
            sock.close()


def not_reading(port: int) -> socket.socket:
    """A client that asks for many answers at once (pipelined) and reads none of them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 300)
    return sock


def test_a_client_that_reads_no_answer_holds_no_place() -> None:
    """A connection whose answer waited for its client to read counted as busy with a
    request, with no deadline: anyone could fill the limit with clients that pipeline requests
    and never read (any route will do: the sign-in page, a script of the console), and every
    webhook was answered 503 for as long as they stayed. Such a connection now gives its
    place to a new one."""
    hello = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with serving() as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        hogs = [not_reading(port) for _ in range(LIMIT)]
        try:
            # every hog's head is in, and its answers wait for it
            stalled = lambda: getattr(guard, "stalled", guard.open)  # noqa: E731
            wait_for(lambda: not guard.waiting and len(stalled()) == LIMIT, timeout=15)
            for _ in range(LIMIT):  # one newcomer after another takes a hog's place
                with connect(port, hello) as new:
                    assert answer(new).startswith(b"HTTP/1.1 200")
        finally:
            for sock in hogs:
                sock.close()


def test_a_client_that_reads_no_answer_is_cut_off_at_the_send_deadline() -> None:
    with serving(send_timeout=0.5) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        hog = not_reading(port)
        try:
            wait_for(lambda: guard.stalled, timeout=15)  # its answer waits for it
            wait_for(lambda: not guard.open, timeout=15)  # and then it is gone
            assert guard.expired == 1
        finally:
            hog.close()
