"""The budget of webhook bodies in flight (``server.max_body_bytes_in_flight``), on a real
daemon served by the daemon's own HTTP server on loopback: requests whose bodies would go
over it are answered 503 with ``Retry-After`` before their bodies are read, and what each
request took is given back however it ends (answered, the client gone, the body deadline)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemons import SECRET, Server, chat_started, served_as_in_production, wait_for, write_setup

from rulekit.config import ServerSettings

BODY = 100_000
"""``server.max_body_bytes``: each held request declares a body this big."""
IN_FLIGHT = 250_000
"""``server.max_body_bytes_in_flight``: two such bodies fit, a third does not."""
PATH = f"/webhooks/online-chat/{SECRET}"


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    # held requests stay held for the test's steps (a busy machine may take seconds over
    # them), unless the test is about the body deadline: ``@pytest.mark.body_timeout(1)``
    marker = request.node.get_closest_marker("body_timeout")
    timeout = marker.args[0] if marker is not None else 60
    config = write_setup(
        tmp_path,
        extra=(
            f"server: {{max_body_bytes: {BODY}, max_body_bytes_in_flight: {IN_FLIGHT}, "
            f"body_timeout: {timeout}, header_timeout: 30}}\n"
        ),
    )
    with served_as_in_production(config) as served:
        yield served


def padded(n: int, size: int = BODY) -> bytes:
    """Visitor ``n``'s chatStarted body, padded with spaces to ``size`` bytes."""
    body = chat_started(n)
    return body + b" " * (size - len(body))


def held(port: int, size: int = BODY) -> socket.socket:
    """A webhook request that declares a body of ``size`` bytes and sends 10 of them."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n".encode()
        + padded(0, size)[:10]
    )
    return sock


def in_flight(server: Server) -> int:
    return server.daemon.ingest.bodies.used


def post(server: Server, body: bytes) -> httpx.Response:
    return httpx.post(server.webhook_url, content=body, timeout=10)


def test_bodies_over_the_budget_are_refused_before_they_are_read(server: Server) -> None:
    first, second = held(server.port), held(server.port)
    try:
        wait_for(lambda: in_flight(server) == 2 * BODY)
        refused = post(server, padded(1))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "retry later" in refused.json()["error"]
        assert in_flight(server) == 2 * BODY  # the refused body took nothing
        small = post(server, chat_started(2))  # one that fits in what is left is served
        assert small.status_code == 200, small.text
        # the budget is given back when a held request ends: by its client going away ...
        first.close()
        wait_for(lambda: in_flight(server) == BODY)
        assert post(server, padded(3)).status_code == 200
        # ... and by its body arriving whole and being answered
        second.sendall(padded(0)[10:])
        second.settimeout(10)
        assert second.recv(4096).startswith(b"HTTP/1.1 200")
        wait_for(lambda: in_flight(server) == 0)
    finally:
        first.close()
        second.close()


@pytest.mark.body_timeout(1)
def test_a_body_cut_off_at_the_deadline_gives_its_share_back(server: Server) -> None:
    sock = held(server.port)
    try:
        wait_for(lambda: in_flight(server) == BODY)
        wait_for(lambda: in_flight(server) == 0)  # body_timeout: 1 s
    finally:
        sock.close()
    accepted = [post(server, padded(n)).status_code for n in (1, 2)]
    assert accepted == [200, 200]


def test_a_body_without_a_length_is_counted_as_it_arrives(server: Server) -> None:
    first, second = held(server.port), held(server.port)
    try:
        wait_for(lambda: in_flight(server) == 2 * BODY)

        def chunks() -> Iterator[bytes]:  # 80,000 bytes: more than the 50,000 left
            yield from (padded(4, 80_000)[i : i + 10_000] for i in range(0, 80_000, 10_000))

        refused = httpx.post(server.webhook_url, content=chunks(), timeout=10)
        assert refused.status_code == 503
        assert in_flight(server) == 2 * BODY  # what it had taken is given back
    finally:
        first.close()
        second.close()
    wait_for(lambda: in_flight(server) == 0)
    accepted = httpx.post(server.webhook_url, content=iter([padded(5, 80_000)]), timeout=10)
    assert accepted.status_code == 200, accepted.text


def test_the_budget_must_hold_one_body() -> None:
    with pytest.raises(ValueError, match="max_body_bytes_in_flight"):
        ServerSettings(max_body_bytes=2_000_000, max_body_bytes_in_flight=1_000_000)
    assert ServerSettings().max_body_bytes_in_flight >= 16 * ServerSettings().max_body_bytes
    assert json.loads(ServerSettings().model_dump_json())["max_body_bytes_in_flight"] > 0
