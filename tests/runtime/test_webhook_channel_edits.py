"""The ``webhook`` channel's edits: each change of a message is its own event.

A message's id marked it seen, so an edit (``message.edited``) of a message posted before was
taken for the message posted again and dropped: the edit, and every later one, was lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from daemons import read, write_setup
from hostile import Inbox

SECRET = "web-secret-0123456789"
RULES = """\
- name: Note edits
  on: {channel: web, event: message}
  if: message.edited
  do:
    - tag: {add: ["edited-{{ message.text }}"]}
"""


def post(url: str, event_id: str, text: str, *, edited: bool) -> int:
    body: dict[str, Any] = {
        "event": "message" if edited else "created",
        "id": event_id,
        "conversation": {"id": "order-7"},
        "client": {"id": "c7"},
        "message": {"id": "m1", "text": text, "author": "client", "edited": edited},
    }
    answer = httpx.post(url, content=json.dumps(body).encode())
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


def test_each_edit_of_a_message_is_an_event_once(tmp_path: Path, serve) -> None:
    config = write_setup(tmp_path, RULES)
    config.write_text(
        config.read_text().replace(
            "channels:\n", f"channels:\n  web: {{provider: webhook, webhook_secret: {SECRET}}}\n"
        )
    )
    server = serve(config)
    url = f"{server.url}/webhooks/web/{SECRET}"
    ids = [
        post(url, "order-7-1", "helo", edited=False),
        post(url, "order-7-2", "hello", edited=True),
        post(url, "order-7-3", "hello!", edited=True),
        post(url, "order-7-3", "hello!", edited=True),  # a retry after a lost answer
        post(url, "order-7-1", "helo", edited=False),
    ]
    Inbox(tmp_path / "rulekit.sqlite3").settle(ids)
    history = read(tmp_path, lambda s: s.history(channel="web"))
    recorded = sorted(r.event_id for r in history if r.event != "updated")
    assert recorded == ["web:order-7-1", "web:order-7-2", "web:order-7-3"]
    tags = read(tmp_path, lambda s: s.get_conversation("web", "order-7")).tags
    assert sorted(tags) == ["edited-hello", "edited-hello!"]
