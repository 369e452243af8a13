"""The console's live streams together (``console.max_streams``) on a real daemon served by
its own HTTP server on loopback, with few connections: streams up to the cap are served, the
next is refused (503 with ``Retry-After``), and webhooks are still answered 200, because the
streams never take every connection."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from daemons import Server, chat_started, served_as_in_production, wait_for, write_setup

TOKEN = "admin-token-for-the-stream-cap"
CONNECTIONS = 6
STREAMS = 4
"""``console.max_streams``: below the connections, as the default (256) is below 1,000."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    config = write_setup(
        tmp_path,
        extra=(
            f"server: {{max_connections: {CONNECTIONS}, header_timeout: 30}}\n"
            f"console: {{admin_token_sha256: {digest}, max_streams: {STREAMS}}}\n"
        ),
    )
    with served_as_in_production(config) as served:
        yield served


def open_stream(stack: ExitStack, url: str, cookies: httpx.Cookies) -> httpx.Response:
    client = stack.enter_context(httpx.Client(base_url=url, cookies=cookies, timeout=10))
    response = stack.enter_context(client.stream("GET", "/console/stream"))
    if response.status_code == 200:
        lines = response.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines) == "retry: 2000"  # the server holds it open now
        stack.callback(lines.close)
    return response


def test_streams_at_their_cap_leave_connections_to_webhooks(server: Server) -> None:
    login = httpx.post(f"{server.url}/console/login", data={"token": TOKEN})
    assert login.status_code == 303
    with ExitStack() as streams:
        for _ in range(STREAMS):
            assert open_stream(streams, server.url, login.cookies).status_code == 200
        refused = open_stream(streams, server.url, login.cookies)
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        assert "live streams are all open" in refused.read().decode()
        for n in range(CONNECTIONS):  # more webhooks than there are connections
            sent = httpx.post(server.webhook_url, content=chat_started(n), timeout=10)
            assert sent.status_code == 200, sent.text
    with ExitStack() as again:  # the streams closed: their places are free again
        wait_for(lambda: open_stream(again, server.url, login.cookies).status_code == 200)
