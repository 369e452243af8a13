"""Sign-in throttling over real HTTP, on a clock the test moves: growing waits per client
address (429 with Retry-After), a budget for all addresses together, and the client address
taken from X-Forwarded-For only when the connection comes from a trusted proxy."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_helpers import TOKENS, ConsoleServer, console_app, serve

from rulekit.runtime.feed import LiveFeed
from rulekit.server.console import Console
from rulekit.server.console.throttle import FREE_FAILURES, GLOBAL_BURST, GLOBAL_RATE
from rulekit.server.proxy import TrustedProxies
from rulekit.snapshot import load_snapshot
from rulekit.store import open_store


class Clock:
    """Monotonic seconds that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(console_server: ConsoleServer) -> Clock:
    clock = Clock()
    console_server.console.throttle.clock = clock
    return clock


def sign_in(url: str, token: str, client: str | None = None) -> httpx.Response:
    """A sign-in, from ``client`` as a proxy on loopback would forward it."""
    headers = {"X-Forwarded-For": f"203.0.113.250, {client}"} if client else {}
    return httpx.post(f"{url}/console/login", data={"token": token}, headers=headers)


def test_failed_sign_ins_make_an_address_wait_longer_each_time(
    console_server: ConsoleServer, clock: Clock
) -> None:
    url = console_server.url
    for _ in range(FREE_FAILURES):
        assert sign_in(url, "wrong", "198.51.100.7").status_code == 401
    waits = []
    for _ in range(4):
        refused = sign_in(url, TOKENS["ann"], "198.51.100.7")  # the right token: not looked at
        assert refused.status_code == 429
        assert "Too many failed sign-ins" in refused.text
        assert "set-cookie" not in refused.headers
        wait = int(refused.headers["Retry-After"])
        waits.append(wait)
        clock.advance(wait - 0.5)
        assert sign_in(url, TOKENS["ann"], "198.51.100.7").status_code == 429  # not yet
        clock.advance(0.5)
        assert sign_in(url, "wrong", "198.51.100.7").status_code == 401  # tried, and failed
    assert waits == [1, 2, 4, 8]

    # another address signs in meanwhile: one address's failures hold up only itself
    assert sign_in(url, TOKENS["bob"], "198.51.100.8").status_code == 303
    assert sign_in(url, TOKENS["bob"]).status_code == 303  # loopback itself, no proxy

    # once it has waited, the right token signs in, and the address starts afresh
    clock.advance(16)
    assert sign_in(url, TOKENS["ann"], "198.51.100.7").status_code == 303
    for _ in range(FREE_FAILURES):
        assert sign_in(url, "wrong", "198.51.100.7").status_code == 401


def test_an_ipv6_client_counts_per_64_network(console_server: ConsoleServer, clock: Clock) -> None:
    for n in range(FREE_FAILURES):  # each from another address of one /64
        response = sign_in(console_server.url, "wrong", f"2001:db8:1:2::{n + 1}")
        assert response.status_code == 401
    assert sign_in(console_server.url, TOKENS["ann"], "2001:db8:1:2::99").status_code == 429
    assert sign_in(console_server.url, TOKENS["ann"], "2001:db8:1:3::1").status_code == 303


def test_many_addresses_together_exhaust_one_budget(
    console_server: ConsoleServer, clock: Clock
) -> None:
    url = console_server.url
    per_address = FREE_FAILURES - 1  # no address is held up on its own
    addresses = [f"192.0.2.{n}" for n in range(1, int(GLOBAL_BURST) // per_address + 1)]
    for address in addresses:
        for _ in range(per_address):
            assert sign_in(url, "wrong", address).status_code == 401
    refused = sign_in(url, TOKENS["ann"], "198.51.100.20")  # a fresh address waits too
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(int(1 / GLOBAL_RATE))
    clock.advance(1 / GLOBAL_RATE)
    assert sign_in(url, TOKENS["ann"], "198.51.100.20").status_code == 303


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    console_files: Path, tmp_path: Path
) -> None:
    """A connection from a non-loopback address of this machine: its X-Forwarded-For is
    ignored unless ``server.trusted_proxies`` names it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing address
        own = probe.getsockname()[0]
    if own.startswith("127.") or own == "0.0.0.0":
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    try:
        for trusted, held_up in (([], True), ([f"{own}/32"], False)):
            console = Console(LiveFeed(), lambda: snapshot, store, clock=Clock())
            with serve(console_app(console, trusted), host=own) as (url, _):
                for n in range(FREE_FAILURES):  # each claims to come from another client
                    assert sign_in(url, "wrong", f"198.51.100.{n + 1}").status_code == 401
                status = sign_in(url, TOKENS["ann"], "198.51.100.99").status_code
            # untrusted: every attempt counted for the connecting address itself
            assert status == (429 if held_up else 303)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        ("198.51.100.1", "198.51.100.1"),
        ("6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left part is the client's own claim
        ("198.51.100.1, 10.0.0.5", "198.51.100.1"),  # 10.0.0.5: a trusted proxy
        ("198.51.100.1, 10.0.0.5, 127.0.0.1", "198.51.100.1"),
        ("10.0.0.6, 10.0.0.5", "10.0.0.6"),  # all trusted: the left-most
        ("198.51.100.1:5678", "198.51.100.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("6.6.6.6, not-an-address", None),  # garbage from the proxy: believe nothing
        ("", None),
    ],
)
def test_the_client_is_the_right_most_untrusted_address(
    forwarded_for: str, client: str | None
) -> None:
    assert TrustedProxies(["10.0.0.0/8"]).client(forwarded_for) == client


@pytest.fixture
def metrics_daemon(tmp_path: Path) -> Iterator[str]:
    from console_helpers import CONFIG
    from scaffold import write

    from rulekit.server.daemon import Daemon

    write(tmp_path / "rules.d" / "rules.yaml", "[]\n")
    config = write(tmp_path / "rulekit.yaml", CONFIG.split("integrations:")[0])
    daemon = Daemon(config, watch=False)
    with serve(daemon.app) as (url, _):
        yield url


def test_the_daemon_counts_refused_sign_ins(metrics_daemon: str) -> None:
    refused = 0
    for _ in range(FREE_FAILURES + 10):  # the waits double: one of these is refused
        status = sign_in(metrics_daemon, "wrong", "198.51.100.30").status_code
        assert status in (401, 429)
        refused += status == 429
        if refused:
            break
    assert refused == 1
    metrics = httpx.get(f"{metrics_daemon}/metrics").text
    assert 'rulekit_console_signin_refused_total{reason="address"} 1.0' in metrics


def test_trusted_proxies_must_be_addresses_or_networks(tmp_path: Path) -> None:
    from scaffold import write

    from rulekit.config import load_config
    from rulekit.errors import ValidationErrors
    from rulekit.plugins import load_plugins

    plugins = load_plugins(entry_points=False)
    good = write(
        tmp_path / "good.yaml", "server: {trusted_proxies: [10.1.2.3/8, '::1', 192.0.2.9]}"
    )
    assert load_config(good, plugins, {}).raw.server.trusted_proxies == [
        "10.0.0.0/8",
        "::1/128",
        "192.0.2.9/32",
    ]
    bad = write(tmp_path / "bad.yaml", "server:\n  trusted_proxies: [10.0.0.0/8, nginx.local]\n")
    with pytest.raises(ValidationErrors, match=r"bad.yaml:2: .*'nginx.local' is not an IP"):
        load_config(bad, plugins, {})


def test_the_documented_trusted_proxies_load(tmp_path: Path) -> None:
    from scaffold import REPO, write

    from rulekit.config import load_config
    from rulekit.plugins import load_plugins

    docs = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = docs.split("```yaml\nserver:\n  trusted_proxies:")[1].split("```")[0]
    config = write(tmp_path / "rulekit.yaml", "server:\n  trusted_proxies:" + block)
    loaded = load_config(config, load_plugins(entry_points=False), {})
    assert loaded.raw.server.trusted_proxies == ["10.0.0.0/8"]


def test_sign_ins_sent_together_are_throttled_as_one_after_another(
    console_files: Path, tmp_path: Path
) -> None:
    """Twenty sign-ins from one address whose forms arrive only once all twenty are being
    handled (an attacker's connections send their heads, then their bodies): the throttle
    lets through as many as it would one after another, not all twenty. Driven through the
    console's ASGI app itself, so that the test knows when every request waits for its body."""
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    clock = Clock()  # frozen: no wait runs out while the sign-ins are handled
    app = console_app(Console(LiveFeed(), lambda: snapshot, store, clock=clock))
    tries = 20

    async def sign_ins() -> list[int]:
        forms_asked = 0
        forms_sent = asyncio.Event()

        async def sign_in_once() -> int:
            body = b"token=wrong"
            asked = False

            async def receive() -> dict[str, Any]:
                nonlocal forms_asked, asked
                if asked:  # nothing more comes (the connection stays open)
                    await asyncio.Event().wait()
                asked = True
                forms_asked += 1
                await forms_sent.wait()
                return {"type": "http.request", "body": body, "more_body": False}

            statuses: list[int] = []

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(sign_in_scope(len(body)), receive, send)
            return statuses[0]

        handled = [asyncio.create_task(sign_in_once()) for _ in range(tries)]
        for _ in range(10_000):  # every request is handled up to reading its form
            if forms_asked == tries:
                break
            await asyncio.sleep(0)
        assert forms_asked == tries
        forms_sent.set()
        return await asyncio.gather(*handled)

    try:
        statuses = asyncio.run(sign_ins())
    finally:
        store.close()
    assert statuses.count(401) == FREE_FAILURES  # tried: then the address waits
    assert statuses.count(429) == tries - FREE_FAILURES


def sign_in_scope(length: int) -> dict[str, Any]:
    """The ASGI scope of a sign-in form of ``length`` bytes from 198.51.100.40."""
    headers = [
        (b"host", b"console.example"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"content-length", str(length).encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/console/login",
        "raw_path": b"/console/login",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("198.51.100.40", 50000),
        "server": ("console.example", 80),
    }
