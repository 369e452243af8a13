"""A host name whose DNS never answers holds up no other lookup of the daemon: calls to it
wait for one lookup (one thread), while every other service's calls, through aiohttp (Slack,
webhook, Chatra) and httpx (Telegram) alike, look their names up and go."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from daemons import Server, write_setup

from rulekit.server.daemon import Daemon

STUCK = "stuck.invalid"
CALLS = 40
"""Calls to the stuck name at once: more than any machine's default executor has threads
(at most 32)."""


class StuckDNS:
    """``socket.getaddrinfo``, but a lookup of :data:`STUCK` hangs until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.asked = 0
        self.under_way = 0
        self.most = 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (STUCK, STUCK.encode()):
            return self.real(host, *args, **kwargs)
        with self.lock:
            self.asked += 1
            self.under_way += 1
            self.most = max(self.most, self.under_way)
        try:
            self.release.wait(120)
        finally:
            with self.lock:
                self.under_way -= 1
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.fixture
def stuck_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[StuckDNS]:
    stuck = StuckDNS()
    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    try:
        yield stuck
    finally:
        stuck.release.set()


async def _call_stuck(n: int) -> None:
    """A call that gives up after half a second, as an action's timeout ends it: through
    httpx (the Telegram action's client), or through aiohttp in a session of its own (aiohttp
    shares a lookup under way between the calls of one session only)."""
    url = f"http://{STUCK}/hook"
    if n % 2:
        with contextlib.suppress(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=0.5) as client:
                await client.post(url, json={})
        return
    timeout = aiohttp.ClientTimeout(total=0.5)
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json={}, timeout=timeout),
        ):
            pass


def test_a_name_whose_dns_never_answers_holds_up_no_other_lookup(
    tmp_path: Path, stuck_dns: StuckDNS
) -> None:
    config = write_setup(tmp_path)
    server = Server(Daemon(config, watch=False)).start()
    try:
        healthz = f"http://localhost:{server.port}/healthz"

        async def scenario() -> tuple[int, int]:
            await asyncio.gather(*(_call_stuck(n) for n in range(CALLS)))
            timeout = aiohttp.ClientTimeout(total=20)
            async with (
                aiohttp.ClientSession() as session,
                session.get(healthz, timeout=timeout) as answer,
            ):
                through_aiohttp = answer.status
            async with httpx.AsyncClient(timeout=20) as client:
                through_httpx = (await client.get(healthz)).status_code
            return through_aiohttp, through_httpx

        assert server.call(scenario(), timeout=60) == (200, 200)
        # one lookup per way of asking (aiohttp and httpx ask with flags of their own): the
        # other calls waited for it
        assert stuck_dns.asked <= 2
    finally:
        stuck_dns.release.set()
        server.stop()
