"""A channel's events and conversations are its own, whatever ids a sender gives them.

The built-in ``webhook`` provider takes the event's id and its conversation's id from the
sender. A sender on that channel could give the id another channel's webhook will mean
(``online-chat:msg:<Chatra's message id>``): recorded first, it made the Chatra visitor's
``created`` a duplicate, which runs no action (the greeting was never sent). Ids that do not
start with the channel's name are given it, by the provider base class, for every provider.
"""

from __future__ import annotations

import json

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
