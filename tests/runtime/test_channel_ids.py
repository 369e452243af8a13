"""A channel's events and conversations are its own, whatever ids a sender gives them.

The built-in ``webhook`` provider takes the event's id and its conversation's id from the
sender. A sender on that channel could give the id another channel's webhook will mean
(``online-chat:msg:<Chatra's message id>``): recorded first, it made the Chatra visitor's
``created`` a duplicate, which runs no action (the greeting was never sent). Ids that do not
start with the channel's name are given it, by the provider base class, for every provider.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import httpx
from daemons import Server, wait_for, write_setup
from hostile import SAMPLES, Inbox, fresh

from rulekit.server.daemon import Daemon

WEB_SECRET = "web-secret-0123456789"
RULES = """\
- name: Greet
  on: {channel: [online-chat, web], event: created}
  cooldown: 1h
  do:
    - autoreply: {text: "Hello"}
"""


def test_a_sender_cannot_take_another_channels_event_or_conversation_ids(tmp_path, chatra):
    config = write_setup(tmp_path, RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
        )
    )
    server = Server(Daemon(config, watch=False)).start()
    try:
        visit = fresh(SAMPLES["chat_started_anonymous.json"], 1)
        message, client = visit["message"]["id"], visit["client"]["id"]
        forged = {
            "id": f"online-chat:msg:{message}",
            "event": "created",
            "conversation": {"id": f"online-chat:{client}"},
            "client": {"id": client},
        }
        web = httpx.post(f"{server.url}/webhooks/web/{WEB_SECRET}", content=json.dumps(forged))
        inbox = Inbox(tmp_path / "rulekit.sqlite3")
        inbox.settle([web.json()["id"]])
        chat = httpx.post(server.webhook_url, content=json.dumps(visit))
        chat_id = chat.json()["id"]
        assert inbox.settle([chat_id])[chat_id] == ("done", None)
        assert inbox.events(web.json()["id"]) == [f"web:online-chat:msg:{message}"]
        assert inbox.events(chat_id) == [f"online-chat:msg:{message}"]
        # the visitor is greeted once, the web channel's event greeted nobody at Chatra
        wait_for(lambda: len(chatra.sent) == 1)
        assert chatra.sent[0]["clientId"] == client
    finally:
        server.stop()


ORIGIN_RULES = """\
- name: Console only
  on: {channel: web, event: updated}
  if: origin == "console"
  do:
    - autoreply: {text: "seen an agent's change"}
"""


def test_a_sender_cannot_pass_its_events_off_as_an_agents_or_rulekits(tmp_path, chatra):
    """The ``webhook`` provider took ``origin`` from the sender: an event of origin ``console``
    passed for an agent's change in the console (rules reacting to agents' changes ran, the
    audit trail named the console), and one of origin ``rulekit`` for rulekit's own. What a
    body says is from the channel."""
    config = write_setup(tmp_path, ORIGIN_RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
        )
    )
    server = Server(Daemon(config, watch=False)).start()
    try:
        inbox = Inbox(tmp_path / "rulekit.sqlite3")
        for n, origin in enumerate(("console", "rulekit", "channel")):
            forged = {
                "id": f"forged-{n}",
                "event": "updated",
                "origin": origin,
                "conversation": {"id": f"conversation-{n}"},
                "client": {"id": f"client-{n}"},
                "agent": {"email": "boss@example.org"},
            }
            answer = httpx.post(
                f"{server.url}/webhooks/web/{WEB_SECRET}", content=json.dumps(forged)
            )
            assert answer.status_code == 200
            item = answer.json()["id"]
            assert inbox.settle([item])[item] == ("done", None)
            [event_id] = inbox.events(item)
            data, trace = _stored(tmp_path, event_id)
            assert data["origin"] == "channel", origin
            assert "Console only" not in json.dumps(trace["plan"]), origin
        assert chatra.sent == []
    finally:
        server.stop()


def _stored(folder, event_id: str) -> tuple[dict, dict]:
    with closing(sqlite3.connect(folder / "rulekit.sqlite3")) as conn:
        [(data, trace)] = conn.execute(
            "SELECT data, trace FROM events WHERE event_id = ?", (event_id,)
        ).fetchall()
    return json.loads(data), json.loads(trace)


KNOWN_RULES = """\
- name: Answer from outside the team
  on: {channel: web, event: agent_replied}
  if: not agent.known
  do:
    - autoreply: {text: "outsider"}
"""


def test_a_sender_cannot_say_who_is_in_the_directory(tmp_path, chatra):
    """The ``webhook`` provider took ``agent.known`` from the sender: a stranger posted as
    ``known: true`` passed for a directory agent (a rule on ``not agent.known``, alerting on
    answers from outside the team, stayed silent), and a directory agent as ``known: false``
    for a stranger. ``known`` is whether the directory lists the agent's email."""
    config = write_setup(tmp_path, KNOWN_RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
        )
    )
    server = Server(Daemon(config, watch=False)).start()
    try:
        inbox = Inbox(tmp_path / "rulekit.sqlite3")
        cases = [  # (what the body says, what the event must say)
            ({"email": "mallory@example.org", "known": True}, ("mallory@example.org", False)),
            ({"email": "ANNA@example.com", "known": False}, ("anna@example.com", True)),
            ({"known": True}, (None, False)),
        ]
        for n, (agent, (email, known)) in enumerate(cases):
            forged = {
                "id": f"reply-{n}",
                "event": "agent_replied",
                "conversation": {"id": f"conversation-{n}"},
                "agent": agent,
                "message": {"id": f"m-{n}", "text": "hi", "author": "agent"},
            }
            answer = httpx.post(
                f"{server.url}/webhooks/web/{WEB_SECRET}", content=json.dumps(forged)
            )
            assert answer.status_code == 200
            item = answer.json()["id"]
            assert inbox.settle([item])[item] == ("done", None)
            [event_id] = inbox.events(item)
            data, trace = _stored(tmp_path, event_id)
            assert (data["agent"]["email"], data["agent"]["known"]) == (email, known), agent
            fired = "Answer from outside the team" in json.dumps(trace["plan"])
            assert fired is not known, agent
    finally:
        server.stop()
