"""rulekit's own replies, echoed back by Chatra without the ``receivedFrom`` tag that tells
them (a transcript's copy of a reply whose fragment was lost, an echo whose tag Chatra dropped),
are still rulekit's own: the id Chatra gave the message when it was sent is marked seen when the
reply is recorded, so the echo is no agent's reply — it cancels no "nobody answered" timer and
fires no rule on ``agent_replied``, which could answer again.

A real daemon, the fake Chatra on loopback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}

- name: Thank the visitor once an agent answered
  on: {channel: online-chat, event: agent_replied}
  do:
    - autoreply: {text: "Thanks for waiting!", on_recovered: true}
"""


def rows(folder: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def events(folder: Path) -> list[str]:
    return [str(name) for (name,) in rows(folder, "SELECT event_id FROM events ORDER BY id")]


def settled(folder: Path) -> bool:
    pending = "SELECT count(*) FROM inbox WHERE status = 'pending'"
    waiting = "SELECT count(*) FROM outbox WHERE status NOT IN ('done', 'dead')"
    return rows(folder, pending)[0][0] == 0 and rows(folder, waiting)[0][0] == 0


@pytest.mark.parametrize("delivery", ["fragment", "transcript"])
def test_an_echo_of_a_reply_without_its_tag_is_still_rulekits_own(tmp_path, serve, delivery):
    with FakeChatra() as chatra:
        server = serve(write_setup(tmp_path, RULES, chatra=chatra))
        started = chat_started(1)
        assert httpx.post(server.webhook_url, content=started).status_code == 200
        wait_for(lambda: chatra.sent and settled(tmp_path))
        (sent,) = chatra.sent
        reply = {
            "id": f"fakeMsg{1:010d}",  # the id the fake gave the reply, as Chatra does
            "type": "agent",
            "text": sent["text"],
            "agentId": "agent0001",
            "createdAt": 1741943530000,
        }  # and no receivedFrom
        client = json.loads(started)["client"]
        if delivery == "fragment":
            body = {"eventName": "chatFragment", "messages": [reply], "client": client}
        else:
            first = json.loads(started)["message"]
            body = {"eventName": "chatTranscript", "messages": [first, reply], "client": client}
        assert httpx.post(server.webhook_url, content=json.dumps(body)).status_code == 200
        wait_for(
            lambda: (
                rows(tmp_path, "SELECT count(*) FROM inbox WHERE status = 'done'")[0][0] == 2
                and settled(tmp_path)
            )
        )
        assert [m["text"] for m in chatra.sent] == ["Hello Visitor 1"]
        assert "online-chat:msg:fakeMsg0000000001" not in events(tmp_path)
        assert events(tmp_path)[0] == "online-chat:msg:msg00000001"  # (the created)
