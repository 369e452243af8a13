"""A running daemon for the workspace API tests: ``rulekit run``'s app on uvicorn, the bundled
Chatra plugin pointed at the fake Chatra, on SQLite or PostgreSQL, with two agents (Anna on
``online-chat``, Boris on another channel) and the admin."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from console_helpers import serve
from postgres_schemas import schema_url
from scaffold import REPO, write

SECRET = "workspace-secret-0123456789"
TOKENS = {
    "anna": "anna-workspace-token-0123",
    "boris": "boris-workspace-token-0123",
    "admin": "admin-workspace-token-0123",
}
SAMPLES = REPO / "examples" / "chatra"
VISITOR = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"
CONVERSATION = f"online-chat:{VISITOR}"

RULES = """
- name: Count agent replies
  on: {channel: online-chat, event: agent_replied}
  do:
    - play_sound: {sound: bell, to: everyone}
- name: Welcome named clients
  on: {channel: online-chat, event: client_updated}
  if: ["client.name"]
  do:
    - play_sound: {sound: chime, to: everyone}
- name: VIP chats are urgent
  on: {channel: online-chat, event: updated}
  if: ["'vip' in changed.tags.added"]
  do:
    - set: {priority: urgent}
"""


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config(storage: str, chatra_url: str, keys: dict[str, str]) -> str:
    return f"""
rules: rules.d
storage: "{storage}"
console:
  admin_token_sha256: {sha(TOKENS["admin"])}
channels:
  online-chat:
    provider: chatra
    webhook_secret: {SECRET}
    default_group: support
    base_url: {chatra_url}
    public_key: {keys["public_key"]}
    secret_key: {keys["secret_key"]}
  forms:
    provider: webhook
    webhook_secret: {SECRET}
groups: [support]
agents:
  - email: anna@example.com
    name: Anna Weber
    groups: [support]
    channels: [online-chat]
    token_sha256: {sha(TOKENS["anna"])}
  - email: boris@example.com
    name: Boris
    groups: [support]
    channels: [forms]
    token_sha256: {sha(TOKENS["boris"])}
  - email: carla@example.com
    name: Carla
    groups: [support]
    channels: [online-chat]
dispatcher: {{backoff_base: 0.05, backoff_max: 0.2, max_attempts: 3}}
"""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Workspace:
    url: str
    daemon: Any
    chatra: Any
    loop: Any = None
    """The daemon's event loop (where :meth:`reload` runs)."""

    def reload(self) -> bool:
        """Have the daemon load its config and rules again (as on SIGHUP); whether it did."""
        future = asyncio.run_coroutine_threadsafe(self.daemon.reload("test"), self.loop)
        return bool(future.result(30))

    def client(self, who: str | None = None) -> httpx.Client:
        """An API client with ``who``'s bearer token (none when ``who`` is None)."""
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=f"{self.url}/console/api", headers=headers, timeout=10)

    def webhook(self, sample: str) -> None:
        body = (SAMPLES / sample).read_bytes()
        response = httpx.post(f"{self.url}/webhooks/online-chat/{SECRET}", content=body)
        assert response.status_code == 200, response.text

    def processed(self, event_id: str) -> None:
        wait_for(lambda: self.event(event_id) is not None, f"event {event_id}")

    def event(self, event_id: str) -> Any:
        with self.daemon.store.reading() as state:
            return state.get_event(event_id)

    def job(self, job_id: int) -> Any:
        with self.daemon.store.reading() as state:
            return state.get_job(job_id)

    def jobs_of(self, event_id: str) -> list[Any]:
        with self.daemon.store.reading() as state:
            return state.jobs(event_id=event_id)

    def events(self, name: str) -> list[Any]:
        with self.daemon.store.reading() as state:
            return state.history(event=name, limit=100)

    def started(self) -> None:
        """The sample chat has started (its ``created`` event is recorded)."""
        self.webhook("chat_started_anonymous.json")
        self.processed("online-chat:msg:Acb7t59BkCvoXi6SS")


def path(conversation_id: str = CONVERSATION) -> str:
    return f"conversations/{quote(conversation_id, safe='')}"


STORAGES = ["sqlite", "postgresql"]


@contextmanager
def running(
    storage_kind: str,
    folder: Path,
    chatra_settings: str = "",
    *,
    storage: str | None = None,
    chatra: Any = None,
    store: Any = None,
) -> Iterator[Workspace]:
    """A daemon on ``storage_kind`` (``sqlite`` or ``postgresql``) with the fake Chatra, its
    files in ``folder``; ``chatra_settings`` are more settings of the Chatra channel (YAML
    lines). ``storage`` (a URL) and ``chatra`` (a running fake) are shared with another daemon:
    the caller keeps them; so is ``store``, an open store on ``storage`` for the daemon."""
    from rulekit_chatra.testing import FakeChatra

    from rulekit.server.daemon import Daemon

    if storage is None:
        url = "sqlite:///rulekit.sqlite3" if storage_kind == "sqlite" else schema_url()
    else:
        url = storage
    write(folder / "rules.d" / "rules.yaml", RULES)
    with contextlib.ExitStack() as stack:
        if chatra is None:
            chatra = stack.enter_context(FakeChatra())
            chatra.add_client(VISITOR, name=None)
        text = config(url, chatra.base_url, chatra.keys)
        if chatra_settings:
            anchor = f"    secret_key: {chatra.keys['secret_key']}\n"
            extra = "".join(f"    {line}\n" for line in chatra_settings.splitlines())
            text = text.replace(anchor, anchor + extra)
        file = write(folder / "rulekit.yaml", text)
        daemon = Daemon(file, watch=False, store=store)
        try:
            with serve(daemon.app) as (served, loop):
                yield Workspace(served, daemon, chatra, loop)
        finally:
            if storage is None and storage_kind == "postgresql":
                from rulekit.store.postgres import drop_schema

                drop_schema(url)


@pytest.fixture(params=STORAGES)
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    with running(request.param, tmp_path) as workspace:
        yield workspace
