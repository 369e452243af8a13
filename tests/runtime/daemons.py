"""Helpers to run the daemon under test: real uvicorn on loopback (in a thread, or as a
`rulekit run` subprocess), real SQLite, configs pointing at fake Chatra/Slack/Telegram."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rulekit_chatra.testing import FakeChatra

from rulekit.server.daemon import Daemon
from rulekit.server.http import DaemonServer, server_config
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram

SECRET = "test-secret-0123456789"
SAMPLE = json.loads(
    (Path(__file__).parents[2] / "examples" / "chatra" / "chat_started_anonymous.json").read_text()
)

AUTOREPLY_RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}
"""


def chat_started(n: int, text: str = "Hello?") -> bytes:
    """A Chatra chatStarted body for visitor ``n`` (its own conversation)."""
    body = json.loads(json.dumps(SAMPLE))
    body["message"]["id"] = f"msg{n:08d}"
    body["message"]["text"] = text
    body["client"]["id"] = f"client{n:08d}"
    body["client"]["chatId"] = f"chat{n:08d}"
    body["client"]["displayedName"] = f"Visitor {n}"
    return json.dumps(body).encode()


def chat_fragment(n: int, k: int, text: str | None = None) -> bytes:
    """Visitor ``n``'s message number ``k`` (k >= 1) in their already started chat."""
    started = json.loads(chat_started(n))
    body = {
        "eventName": "chatFragment",
        "messages": [
            {
                "id": f"msg{n:08d}-{k}",
                "type": "client",
                "text": text if text is not None else f"message {k}",
                "createdAt": 1741943525000 + k * 1000,
            }
        ],
        "agents": [],
        "client": started["client"],
    }
    return json.dumps(body).encode()


def listening_socket() -> socket.socket:
    """A socket listening on an ephemeral port of 127.0.0.1, for a server to take over (no
    window between choosing the port and binding it, in which another process could take it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
"""The line uvicorn logs once it listens (with the port it bound, when asked for port 0)."""


def write_setup(
    folder: Path,
    rules: str = AUTOREPLY_RULES,
    *,
    chatra: FakeChatra | None = None,
    slack: FakeSlack | None = None,
    telegram: FakeTelegram | None = None,
    dispatcher: dict[str, Any] | None = None,
    extra: str = "",
    fetch_client: bool = False,
) -> Path:
    """A config and a rules folder in ``folder``; returns the config's path."""
    (folder / "rules.d").mkdir(exist_ok=True)
    (folder / "rules.d" / "rules.yaml").write_text(rules)
    chatra_keys = ""
    if chatra is not None:
        chatra_keys = (
            f"    base_url: {chatra.base_url}\n"
            f"    public_key: {chatra.public_key}\n"
            f"    secret_key: {chatra.secret_key}\n"
            "    default_agent_id: agent0001\n"
            f"    fetch_client: {str(fetch_client).lower()}\n"
        )
    integrations = ""
    if slack is not None or telegram is not None:
        integrations = "integrations:\n"
        if slack is not None:
            integrations += f"  slack: {{token: {slack.token}, base_url: '{slack.base_url}'}}\n"
        if telegram is not None:
            integrations += (
                f"  telegram: {{token: '{telegram.token}', base_url: '{telegram.base_url}'}}\n"
            )
    settings = {"backoff_base": 0.05, "backoff_max": 1.0, **(dispatcher or {})}
    config = folder / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        "storage: sqlite:///rulekit.sqlite3\n"
        "channels:\n"
        "  online-chat:\n"
        "    provider: chatra\n"
        f"    webhook_secret: {SECRET}\n"
        "    default_group: support\n"
        f"{chatra_keys}"
        "groups: [support]\n"
        "agents:\n"
        "  - {email: anna@example.com, groups: [support], channels: [online-chat]}\n"
        f"dispatcher: {json.dumps(settings)}\n"
        f"{integrations}{extra}"
    )
    return config


class Server:
    """A daemon served by uvicorn in a background thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.socket = listening_socket()
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(daemon.app, log_config=None, lifespan="on"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.socket]))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the daemon did not start")
            time.sleep(0.01)
        return self

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the daemon's event loop."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/online-chat/{SECRET}"


def read(folder: Any, query: Any) -> Any:
    """``query(state)`` on the daemon's SQLite file, through a connection of its own."""
    store = SQLiteStore(folder / "rulekit.sqlite3")
    try:
        with store.transaction() as state:
            return query(state)
    finally:
        store.close()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02) -> Any:
    """Poll until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(interval)


class Process:
    """``rulekit run`` as a subprocess, on an ephemeral port (``port``, read from its log)."""

    def __init__(self, config: Path, *args: str) -> None:
        self.config = config
        self._port: int | None = None
        self.log = config.parent / f"daemon-{time.time_ns()}-{os.getpid()}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as output:
            self.proc = self._start(config, ("--port", "0", *args), output, env)

    @property
    def port(self) -> int:
        """The port the daemon bound (waits until it listens)."""
        if self._port is None:

            def bound() -> int | None:
                if self.proc.poll() is not None:
                    raise AssertionError(f"rulekit run exited: {self.output()}")
                found = LISTENING.search(self.log.read_bytes())
                return int(found.group(1)) if found else None

            self._port = wait_for(bound, 30.0, 0.05)
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, config: Path, args: tuple[str, ...], output: Any, env: dict) -> Any:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "rulekit.cli.main", "run"),
                *("--config", str(config), *args),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhooks/online-chat/{SECRET}"

    def wait_ready(self, timeout: float = 30.0) -> Process:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"rulekit run exited: {self.output()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, 0.05)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def install_plugin(
    tmp_path: Path, monkeypatch: Any, module: str, source: str, *, here: bool = True
) -> Path:
    """Write a plugin distribution (``module``.py holding ``source``, with its ``rulekit`` entry
    point) and put it on ``PYTHONPATH`` for the daemons started as processes and the evaluation
    workers, and with ``here`` on this process's path too; returns its folder."""
    site = tmp_path / "site"
    distribution = module.replace("_", "-")
    info = site / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    entry = module.removeprefix("rulekit_").split("_")[0]
    (info / "entry_points.txt").write_text(f"[rulekit]\n{entry} = {module}\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    if here:
        monkeypatch.syspath_prepend(str(site))
    return site


class LogLines:
    """Where the daemon's log goes in a test (the stream given to ``configure_logging``)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def served_as_in_production(config: Path) -> Iterator[Server]:
    """A daemon on ``config`` behind the HTTP server ``rulekit run`` gives it (the limits of the
    config's ``server:`` section enforced), stopped after."""
    daemon = Daemon(config, watch=False)
    served = Server(daemon)
    settings = daemon.snapshot.config.raw.server
    served.server = DaemonServer(
        server_config(daemon.app, settings, "127.0.0.1", served.port), daemon.feed.close
    )
    served.start()
    try:
        yield served
    finally:
        served.stop()
