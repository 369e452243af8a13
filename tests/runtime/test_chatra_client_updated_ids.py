"""Chatra's ``client_updated`` ids through a real daemon: each change is an event once.

Its id was a digest of the values before and after and the webhook's first message: each
transcript of a chat Chatra reopened begins with the chat's first message, so the same change
(an email changed back and then again) in a later transcript took an earlier one's id and was
dropped as a repeat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from daemons import chat_started, read, write_setup
from hostile import Inbox

RULES = """\
- name: Note changes
  on: {channel: online-chat, event: client_updated}
  do:
    - tag: {add: ["changed"]}
"""


def body(event: str, message_ids: list[int], email: str) -> bytes:
    """Visitor 1's webhook of ``event`` with the messages numbered ``message_ids``, the
    visitor's email ``email``."""
    started = json.loads(chat_started(1))
    client = {**started["client"], "info": {"email": email}}
    messages: list[dict[str, Any]] = [
        {
            "id": f"msg1-{k}",
            "type": "client",
            "text": f"message {k}",
            "createdAt": 1741943525000 + k * 1000,
        }
        for k in message_ids
    ]
    return json.dumps(
        {"eventName": event, "messages": messages, "agents": [], "client": client}
    ).encode()


def test_the_same_change_in_a_later_transcript_is_its_own_event(tmp_path: Path, serve) -> None:
    server = serve(write_setup(tmp_path, RULES))
    posted = [
        chat_started(1),
        body("chatFragment", [1], "a@example.com"),  # none -> a
        body("chatTranscript", [0, 1, 2], "b@example.com"),  # a -> b, closed
        body("chatFragment", [3], "a@example.com"),  # b -> a, reopened
        body("chatTranscript", [0, 1, 2, 3, 4], "b@example.com"),  # a -> b again
        body("chatTranscript", [0, 1, 2, 3, 4], "b@example.com"),  # the same, delivered again
    ]
    ids = []
    for content in posted:
        answer = httpx.post(server.webhook_url, content=content)
        assert answer.status_code == 200, answer.text
        ids.append(int(answer.json()["id"]))
    Inbox(tmp_path / "rulekit.sqlite3").settle(ids)
    history = read(tmp_path, lambda s: s.history(channel="online-chat", limit=100))
    changes = [r.data["client"]["email"] for r in reversed(history) if r.event == "client_updated"]
    assert changes == ["a@example.com", "b@example.com", "a@example.com", "b@example.com"]
