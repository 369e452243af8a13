"""Building hostile webhook bodies from the Chatra samples, and reading what a daemon made of them.

Used by the hostile-body tests: one daemon per test module receives many bodies, so each body
gets its own visitor and message ids (:func:`fresh`) and is judged by its own inbox row.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from daemons import Server, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra

from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon

EXAMPLES = Path(__file__).parents[2] / "examples" / "chatra"
SAMPLES: dict[str, Any] = {
    path.name: json.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))
}
"""The Chatra sample bodies (the same as the shared samples, without the malformed ones)."""

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}, you wrote {{ message.text }}"}
"""
"""Templates render what visitors sent, and the reply goes out (to a fake Chatra)."""

Path_ = tuple[str | int, ...]
PYTHON_ERROR = re.compile(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b")
"""How an inbox error reads when an unexpected exception set the item aside (a bug)."""


def string_paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every string in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))
    elif isinstance(value, str):
        yield path


def value_paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every value in ``value`` (leaves and containers), the root excluded."""
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield (*path, key)
            yield from value_paths(item, (*path, key))


def key_paths(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Paths of every key of every object in ``value`` (the path ends with the key)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from key_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from key_paths(item, (*path, index))


def fresh(sample: Any, n: int) -> Any:
    """A copy of ``sample`` with its own visitor, chat and message ids (suffixed ``-n``)."""
    body = copy.deepcopy(sample)
    client = body.get("client") if isinstance(body.get("client"), dict) else {}
    messages = [body["message"]] if isinstance(body.get("message"), dict) else []
    messages += [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for part, key in [(client, "id"), (client, "chatId"), *((m, "id") for m in messages)]:
        if isinstance(part.get(key), str):
            part[key] = f"{part[key]}-{n}"
    return body


def replaced(body: Any, path: Path_, change: Callable[[Any], Any]) -> Any:
    """A copy of ``body`` with the value at ``path`` replaced by ``change(value)``."""
    body = copy.deepcopy(body)
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = change(parent[path[-1]])
    return body


def renamed_key(body: Any, path: Path_, change: Callable[[str], str]) -> Any:
    """A copy of ``body`` with the key at ``path`` renamed to ``change(key)`` (order kept)."""
    body = copy.deepcopy(body)
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    items = list(parent.items())
    parent.clear()
    for key, value in items:
        parent[change(key) if key == path[-1] else key] = value
    return body


def with_surrogates(text: str) -> str:
    """``text`` with a lone low surrogate before it and a lone high one after (never a pair)."""
    return f"\udfff{text}\ud800"


def encode(body: Any) -> bytes:
    """JSON as a sender writes it: surrogates become ``\\udXXX`` escapes (valid JSON)."""
    return json.dumps(body).encode()


@dataclass
class Inbox:
    """Read-only views of a daemon's SQLite store."""

    database: Path

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with closing(sqlite3.connect(self.database, timeout=30)) as conn:
            return conn.execute(sql, params).fetchall()

    def status(self, inbox_id: int) -> tuple[str, str | None]:
        return self._rows("SELECT status, error FROM inbox WHERE id = ?", (inbox_id,))[0]

    def body(self, inbox_id: int) -> bytes:
        return self._rows("SELECT body FROM inbox WHERE id = ?", (inbox_id,))[0][0]

    def conversation_key(self, inbox_id: int) -> str | None:
        return self._rows("SELECT conversation_key FROM inbox WHERE id = ?", (inbox_id,))[0][0]

    def settle(
        self, inbox_ids: list[int], timeout: float = 60
    ) -> dict[int, tuple[str, str | None]]:
        """Wait until none of ``inbox_ids`` is pending; their (status, error)."""
        wanted = set(inbox_ids)

        def settled() -> dict[int, tuple[str, str | None]] | None:
            rows = self._rows("SELECT id, status, error FROM inbox")
            found = {row[0]: (row[1], row[2]) for row in rows if row[0] in wanted}
            if len(found) == len(wanted) and all(s != "pending" for s, _ in found.values()):
                return found
            return None

        return wait_for(settled, timeout=timeout)

    def events(self, inbox_id: int) -> list[str]:
        rows = self._rows("SELECT event_id FROM events WHERE inbox_id = ?", (inbox_id,))
        return [row[0] for row in rows]


def rulekit(config: Path, *args: str) -> str:
    """Run a ``rulekit`` command in-process; fail on any exit code but 0; its output."""
    result = CliRunner().invoke(cli, [*args, "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


class Site:
    """A daemon (real HTTP on loopback, real SQLite) with a fake Chatra behind it."""

    def __init__(self, folder: Path, server: Server) -> None:
        self.config = folder / "rulekit.yaml"
        self.server = server
        self.inbox = Inbox(folder / "rulekit.sqlite3")

    def post(self, body: bytes, url: str | None = None) -> httpx.Response:
        return httpx.post(url or self.server.webhook_url, content=body, timeout=30)

    def accept(self, bodies: list[bytes]) -> list[int]:
        """Post the bodies, several at a time; each must be accepted (a new inbox item); their
        inbox ids, in order."""
        answers = asyncio.run(post_all(self.server.webhook_url, bodies))
        for answer, body in zip(answers, bodies, strict=True):
            assert answer.status_code == 200, (answer.text, body[:300])
            assert answer.json()["status"] == "accepted"
        return [answer.json()["id"] for answer in answers]


async def post_all(url: str, bodies: list[bytes], at_once: int = 16) -> list[httpx.Response]:
    gate = asyncio.Semaphore(at_once)
    async with httpx.AsyncClient(timeout=60) as client:

        async def post(body: bytes) -> httpx.Response:
            async with gate:
                return await client.post(url, content=body)

        return await asyncio.gather(*(post(body) for body in bodies))


@contextmanager
def running_site(folder: Path) -> Iterator[Site]:
    """A daemon on :data:`RULES` in ``folder``, stopped afterwards."""
    with FakeChatra() as chatra:
        write_setup(folder, RULES, chatra=chatra)
        server = Server(Daemon(folder / "rulekit.yaml", watch=False)).start()
        try:
            yield Site(folder, server)
        finally:
            server.stop()
