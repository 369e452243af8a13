"""Helpers of the console tests: a console on a real uvicorn server on loopback, with a live
feed, a SQLite store and a snapshot loaded from a small config with two agents (and an admin)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from scaffold import write

from rulekit.runtime.feed import LiveFeed
from rulekit.server.console import Console
from rulekit.server.proxy import ForwardedHeaders
from rulekit.snapshot import Snapshot, load_snapshot
from rulekit.store import JournaledStore, open_store

uvicorn = pytest.importorskip("uvicorn")
starlette_applications = pytest.importorskip("starlette.applications")
from starlette.middleware import Middleware  # noqa: E402

TOKENS = {"ann": "ann-token-0123456789", "bob": "bob-token-0123456789", "admin": "admin-token-xyz"}
ANN = "Ann@Example.com"
BOB = "bob@example.com"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CONFIG = f"""
rules: rules.d
storage: sqlite:///x.sqlite3
console:
  admin_token_sha256: "{sha(TOKENS["admin"])}"
groups: [support]
agents:
  - email: {ANN}
    name: Ann
    groups: [support]
    channels: [online-chat]
    token_sha256: "{sha(TOKENS["ann"]).upper()}"
  - email: {BOB}
    name: Bob
    groups: [support]
    channels: [webhook]
    token_sha256: "{sha(TOKENS["bob"])}"
  - email: nobody@example.com
    channels: [online-chat]
integrations:
  sounds:
    files: {{ding: custom/ding.wav}}
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now, for a server that must be told its port (nginx); servers
    started here bind port 0 themselves instead (:func:`listening_socket`)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket listening on an ephemeral port of ``host``, for uvicorn to take over."""
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen(128)
    return sock


@dataclass
class ConsoleServer:
    """A running console: ``url``, and ``publish`` to put a message on its live feed."""

    url: str
    feed: LiveFeed
    store: JournaledStore
    snapshot: Snapshot
    console: Console
    loop: asyncio.AbstractEventLoop
    extra: dict[str, Any] = field(default_factory=dict)

    def publish(self, message: dict[str, Any]) -> None:
        done = threading.Event()

        def publish() -> None:
            self.feed.publish(message)
            done.set()

        self.loop.call_soon_threadsafe(publish)
        assert done.wait(30)

    def subscribers(self) -> int:
        return self.feed.subscribers

    def client(self, who: str | None = None) -> httpx.Client:
        """An HTTP client, signed in as ``who`` (a key of TOKENS) when given."""
        client = httpx.Client(base_url=self.url, timeout=5)
        if who is not None:
            response = httpx.post(f"{self.url}/console/login", data={"token": TOKENS[who]})
            assert response.status_code == 303, response.text
            client.cookies = response.cookies
        return client


@contextlib.contextmanager
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """Run ``app`` on uvicorn in a thread on ``host``; yield its URL and event loop. uvicorn
    leaves ``X-Forwarded-*`` alone: the app decides (as the daemon's does)."""
    sock = listening_socket(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        proxy_headers=False,
        log_config=None,
        log_level="warning",
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        # a Runner, as asyncio.run: what still runs at the end (the console's recorder) is
        # cancelled, then the loop is closed
        with asyncio.Runner() as runner:
            loops.append(runner.get_loop())
            runner.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}", loops[0]
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextlib.contextmanager
def daemon_with_feed(folder: Path, rules: str, config: str) -> Iterator[tuple[str, Any]]:
    """A daemon with ``rules`` and the config ``config`` (YAML) on uvicorn: its URL, and a way
    to publish a message on its live feed from the test's thread."""
    from rulekit.server.daemon import Daemon

    write(folder / "rules.d" / "rules.yaml", rules)
    daemon = Daemon(write(folder / "rulekit.yaml", config), watch=False)
    with serve(daemon.app) as (url, loop):
        yield url, lambda message: loop.call_soon_threadsafe(daemon.feed.publish, message)


@contextlib.contextmanager
def two_channel_team(
    folder: Path, rules: str, secret: str, tokens: dict[str, str], vip_agent: str
) -> Iterator[tuple[str, Any]]:
    """A daemon (as :func:`daemon_with_feed`) with the fake Chatra behind ``online-chat`` and a
    second Chatra channel, ``vip-chat``, both in the group ``support``; the admin and the
    agents anna@ (online-chat) and carla@example.com (both channels), signed in with
    ``tokens``, and ``vip_agent``: the YAML of one more agent's entry (no indent, its first
    line the ``- email:`` one)."""
    from rulekit_chatra.testing import FakeChatra

    other = textwrap.indent(vip_agent.strip(), " " * 14).lstrip()
    with FakeChatra() as chatra:
        config = f"""
            rules: rules.d
            storage: sqlite:///rulekit.sqlite3
            console:
              admin_token_sha256: {sha(tokens["admin"])}
            channels:
              online-chat:
                provider: chatra
                webhook_secret: {secret}
                default_group: support
                base_url: {chatra.base_url}
                public_key: {chatra.keys["public_key"]}
                secret_key: {chatra.keys["secret_key"]}
              vip-chat: {{provider: chatra, webhook_secret: {secret}-vip, default_group: support}}
            groups: [support]
            agents:
              - email: anna@example.com
                groups: [support]
                channels: [online-chat]
                token_sha256: {sha(tokens["anna"])}
              {other}
              - email: carla@example.com
                groups: [support]
                channels: [online-chat, vip-chat]
                token_sha256: {sha(tokens["carla"])}
            """
        with daemon_with_feed(folder, rules, textwrap.dedent(config)) as found:
            yield found


def signed_in_with(url: str, token: str) -> httpx.Client:
    """A client of the console at ``url``, signed in with ``token``."""
    response = httpx.post(f"{url}/console/login", data={"token": token})
    assert response.status_code == 303, response.text
    return httpx.Client(base_url=url, cookies=response.cookies, timeout=10)


def opened(lines: Iterator[str]) -> Iterator[str]:
    """A stream's ``lines`` once it has begun: its agent counts as online from then on."""
    assert next(lines).startswith("retry:")
    return lines


def messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON messages of a stream's ``lines``."""
    for line in lines:
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def console_app(console: Console, trusted: list[str] | None = None) -> Any:
    """The console's routes in an app that, like the daemon's, believes ``X-Forwarded-*``
    from loopback and ``trusted`` only."""
    return starlette_applications.Starlette(
        routes=console.routes(), middleware=[Middleware(ForwardedHeaders, trusted=trusted or [])]
    )


@pytest.fixture
def console_files(tmp_path: Path) -> Path:
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    write(tmp_path / "rules.d" / "rules.yaml", "[]\n")
    sound = tmp_path / "custom" / "ding.wav"
    sound.parent.mkdir()
    sound.write_bytes((Path(__file__).parents[3] / "rulekit/actions/sounds/chime.wav").read_bytes())
    (tmp_path / "secret.txt").write_text("not for the console\n")
    return config


@pytest.fixture
def console_server(console_files: Path, tmp_path: Path) -> Iterator[ConsoleServer]:
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    feed = LiveFeed()
    console = Console(feed, lambda: snapshot, store, keepalive=0.3)
    app = console_app(console)
    try:
        with serve(app) as (url, loop):
            yield ConsoleServer(url, feed, store, snapshot, console, loop)
    finally:
        store.close()
