"""The ``webhook`` action against receivers that misbehave on purpose (a raw HTTP server on
loopback): an endless answer, a gzip bomb, an answer dripped byte by byte, a redirect. Each call
ends within the target's timeout with a clear outcome, holding little of the answer."""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from action_helpers import make_context, run

from rulekit.actions.webhook import Webhook, WebhookParams, WebhooksIntegration
from rulekit.errors import PermanentActionError, RetryableActionError

Answer = Callable[[socket.socket], None]


class _Receiver(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    answer: Answer
    sent: int = 0


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Receiver)
        self.request.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:  # the request's head; its body is small and ignored
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        with contextlib.suppress(OSError):  # the client hung up: that is the point
            server.answer(self.request)


@contextmanager
def receiver(answer: Answer) -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _Handler)
    server.answer = answer
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def call(server: _Receiver, timeout: float = 5.0) -> dict[str, object]:
    host, port = server.server_address[:2]
    settings = WebhooksIntegration.model_validate(
        {"crm": {"url": f"http://{host}:{port}/hook", "secret": "s" * 20, "timeout": timeout}}
    )
    action = Webhook(settings)

    async def scenario() -> dict[str, object]:
        return await action.execute(WebhookParams(to="crm"), make_context(delivery="job-1"))

    return run(action, scenario)


def endless(sock: socket.socket) -> None:
    """200 with a 2 GB Content-Length, sent as fast as the client takes it."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2147483648\r\n\r\n")
    block = b"x" * 65536
    for _ in range(2**31 // len(block)):
        sock.sendall(block)


def test_an_endless_answer_is_read_no_further_than_its_start() -> None:
    with receiver(endless) as server:
        tracemalloc.start()
        try:
            result = call(server)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result["status"] == 200
    assert str(result["body"]).startswith("xxxx") and len(str(result["body"])) <= 513
    assert peak < 20 * 2**20  # not the 2 GB, nor the seconds' worth of it


def test_a_gzip_bomb_is_never_inflated() -> None:
    bomb = gzip.compress(b"0" * (256 * 2**20), compresslevel=9)  # 256 MB in ~250 KB

    def answer(sock: socket.socket) -> None:
        head = (
            "HTTP/1.1 502 Bad Gateway\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(bomb)}\r\n\r\n"
        )
        sock.sendall(head.encode() + bomb)

    with receiver(answer) as server:
        tracemalloc.start()
        try:
            with pytest.raises(RetryableActionError) as caught:
                call(server)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "HTTP 502: (gzip-encoded answer)" in caught.value.message
    assert peak < 20 * 2**20


def test_an_answer_dripped_byte_by_byte_ends_at_the_timeout() -> None:
    def drip(sock: socket.socket) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"y" * 100_000:
            sock.sendall(bytes([byte]))
            time.sleep(0.02)

    with receiver(drip) as server:
        started = time.monotonic()
        with pytest.raises(RetryableActionError) as caught:
            call(server, timeout=0.5)
    assert "did not answer within 0.5 s" in caught.value.message
    assert time.monotonic() - started < 0.5 + 5  # the timeout, and a margin for a slow machine


def test_a_redirect_to_another_host_is_not_followed() -> None:
    asked: list[bytes] = []

    def redirect(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://203.0.113.9/steal\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        asked.append(b"once")

    with receiver(redirect) as server, pytest.raises(PermanentActionError) as caught:
        call(server)
    assert "redirects are not followed" in caught.value.message
    assert asked == [b"once"]


def _cut(status: bytes, *, then: str) -> Answer:
    """An answer of ``status`` whose body stops after its first bytes: the connection is then
    closed (``then="close"``), or nothing more comes (``then="stall"``)."""

    def answer(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 1000\r\n\r\n" + b'{"id": 4')
        if then == "close":
            sock.shutdown(socket.SHUT_RDWR)
            return
        while sock.recv(65536):  # until the client gives up
            pass

    return answer


@pytest.mark.parametrize("then", ["close", "stall"])
def test_a_2xx_whose_answer_is_cut_short_is_success_not_a_call_to_make_again(then: str) -> None:
    """The receiver answered 200 (it took the call), then the rest of the answer was lost:
    a retry would deliver the call twice."""
    calls: list[bytes] = []

    def answer(sock: socket.socket) -> None:
        calls.append(b"call")
        _cut(b"200 OK", then=then)(sock)

    with receiver(answer) as server:
        result = call(server, timeout=0.5)
    assert result == {"status": 200, "body": '{"id": 4', "answer": "cut short"}
    assert calls == [b"call"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (b"503 Service Unavailable", RetryableActionError),
        (b"400 Bad Request", PermanentActionError),
    ],
)
def test_an_error_whose_answer_is_cut_short_means_what_its_status_means(
    status: bytes, error: type[Exception]
) -> None:
    with receiver(_cut(status, then="close")) as server, pytest.raises(error) as caught:
        call(server, timeout=0.5)
    assert f"HTTP {status[:3].decode()}" in str(caught.value)
