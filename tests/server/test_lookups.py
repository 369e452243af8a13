"""The daemon's host name lookups (:class:`rulekit.server.lookups.Lookups`)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from rulekit.server.lookups import Lookups

uvloop = pytest.importorskip("uvloop")


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_an_address_is_answered_without_a_lookup_thread(loop_factory):
    """uvloop's sock_connect asks the loop's getaddrinfo for the address it connects to (the
    email action's connections do): an address needs no thread, so it never waits behind
    names whose DNS never answers. Here no thread is left at all."""

    async def scenario() -> tuple[list[object], list[object]]:
        lookups = Lookups(threads=1)
        loop = asyncio.get_running_loop()
        lookups.install(loop)
        lookups.uninstall()  # its threads end: only what needs none can be answered
        found = await lookups.getaddrinfo("127.0.0.1", 25, type=socket.SOCK_STREAM)
        found6 = await lookups.getaddrinfo("::1", "25", family=socket.AF_INET6)
        return [info[4] for info in found], [info[4][:2] for info in found6]

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        found, found6 = runner.run(scenario())
    assert found == [("127.0.0.1", 25)]
    assert set(found6) == {("::1", 25)}


def test_a_name_is_still_looked_up_in_a_thread():
    async def scenario() -> object:
        lookups = Lookups(threads=1)
        try:
            return await lookups.getaddrinfo("localhost", 25, type=socket.SOCK_STREAM)
        finally:
            lookups.uninstall()

    assert asyncio.run(scenario())
