"""One agent's console pages cannot take every connection: each agent holds at most
``MAX_STREAMS`` live streams, the next one is refused (429) until one closes, and other agents
are not affected."""

from __future__ import annotations

import json
from contextlib import ExitStack

import httpx
from console_helpers import ConsoleServer
from workspace_helpers import wait_for

from rulekit.server.console.routes import MAX_STREAMS


def open_stream(stack: ExitStack, client: httpx.Client) -> httpx.Response:
    response = stack.enter_context(client.stream("GET", "/console/stream"))
    if response.status_code == 200:
        lines = response.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines) == "retry: 2000"  # the server holds it open now
        stack.callback(lines.close)
    return response


def test_each_agent_holds_a_bounded_number_of_streams(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as ann, console_server.client("bob") as bob:
        with ExitStack() as streams:
            for _ in range(MAX_STREAMS):
                assert open_stream(streams, ann).status_code == 200
            refused = open_stream(streams, ann)
            assert refused.status_code == 429
            assert "live streams are open already" in json.loads(refused.read())["error"]
            assert refused.headers["retry-after"]
            with ExitStack() as other:  # another agent's pages are not counted with hers
                assert open_stream(other, bob).status_code == 200
        # her pages closed: their places are free again
        wait_for(lambda: not console_server.console.streams, "her streams to close")
        with ExitStack() as again:
            assert open_stream(again, ann).status_code == 200
