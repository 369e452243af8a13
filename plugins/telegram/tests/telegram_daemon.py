"""A real daemon for the end-to-end tests: uvicorn on loopback in a thread, real SQLite, a
``telegram`` channel pointed at the fake Bot API, beside Chatra's ``online-chat``."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import Updates
from telegram_samples import SECRET

RULES = """\
- name: Greet new conversations
  on: {channel: [online-chat, telegram], event: [created, reopened]}
  do:
    - autoreply: {text: "Hello {{ client.name or 'there' }}!"}
- name: Answer every message
  on: {channel: telegram, event: message}
  if: not message.edited
  do:
    - autoreply: {text: "Got {{ message.kind }}: {{ message.text or '(no text)' }}"}
"""


def write_setup(folder: Path, telegram: FakeTelegram, *, updates: str = "webhook") -> Path:
    """A config and a rules folder in ``folder``; returns the config's path."""
    (folder / "rules.d").mkdir(exist_ok=True)
    (folder / "rules.d" / "rules.yaml").write_text(RULES)
    config = folder / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        "storage: sqlite:///rulekit.sqlite3\n"
        "channels:\n"
        "  online-chat: {provider: chatra, webhook_secret: chatra-secret-0123456789}\n"
        "  telegram:\n"
        "    provider: telegram-bot\n"
        f"    token: '{telegram.token}'\n"
        f"    base_url: {telegram.service.base_url}\n"
        f"    webhook_secret: {SECRET}\n"
        f"    updates: {updates}\n"
        "    default_group: support\n"
        "groups: [support]\n"
        'dispatcher: {"backoff_base": 0.05, "backoff_max": 1.0}\n'
    )
    return config


def samples_clock() -> datetime:
    """The time a test daemon's timers see: when the sample updates are dated (``Updates()``
    starts there), so that no ``close_after`` timer falls due unless a test moves the clock."""
    return datetime.fromtimestamp(Updates().date, UTC)


class Server:
    """A daemon served by uvicorn in a background thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(128)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(daemon.app, log_config=None, lifespan="on"))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def call(self, function: Callable[[], Any]) -> None:
        """Call ``function`` in the daemon's event loop (e.g. to wake one of its workers)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(function)

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.server.serve(sockets=[self.socket]))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive())
        assert self.server.started, "the daemon did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.02)
