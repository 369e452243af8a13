"""Records an earlier ``rulekit forget`` left broken: it wrote ``[forgotten]`` over times,
choices and kinds that a client's short personal value was part of ("2024" of a time, "high" of
a priority, "text" of a message kind). They load again, each such field as unknown (None), an
event's own time from its row: the client's next message is processed and ``rulekit why``
explains the event."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
from click.testing import CliRunner
from daemons import chat_fragment, chat_started, wait_for, write_setup

from rulekit.cli.main import cli
from rulekit.event import Event
from rulekit.store.erasure import FORGOTTEN
from rulekit.store.sqlite import SQLiteStore

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}
- name: Answer
  on: {channel: online-chat, event: message}
  do:
    - autoreply: {text: "Got it"}
"""

CONVERSATION_FIELDS = ("status", "priority", "last_client_message_at", "last_agent_reply_at")
EVENT_FIELDS = (
    ("occurred_at",),
    ("conversation", "priority"),
    ("conversation", "last_client_message_at"),
    ("message", "kind"),
    ("message", "author"),
    ("message", "created_at"),
)


def break_as_an_earlier_forget_did(database: Path) -> str:
    """Write ``[forgotten]`` over the typed fields of every stored conversation and event;
    the id of one of the events."""
    with sqlite3.connect(database) as conn:
        for channel, key, data in conn.execute("SELECT channel, key, data FROM conversations"):
            conversation = json.loads(data)
            conversation.update(dict.fromkeys(CONVERSATION_FIELDS, FORGOTTEN))
            conn.execute(
                "UPDATE conversations SET data = ? WHERE channel = ? AND key = ?",
                (json.dumps(conversation), channel, key),
            )
        events = conn.execute("SELECT id, event_id, data FROM events").fetchall()
        for key, _, data in events:
            event = json.loads(data)
            for path in EVENT_FIELDS:
                part = event
                for name in path[:-1]:
                    part = part.setdefault(name, {})
                part[path[-1]] = FORGOTTEN
            conn.execute("UPDATE events SET data = ? WHERE id = ?", (json.dumps(event), key))
    assert events
    return events[0][1]


def test_records_an_earlier_forget_broke_load_and_the_client_goes_on(tmp_path, serve, chatra):
    config = write_setup(tmp_path, RULES, chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1)
    server.stop()
    event_id = break_as_an_earlier_forget_did(tmp_path / "rulekit.sqlite3")

    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        with store.transaction() as state:
            record = state.get_event(event_id)
            conversation = state.get_conversation("online-chat", "client00000001")
        assert record is not None and conversation is not None
        assert (conversation.priority, conversation.last_client_message_at) == (None, None)
        event = Event.model_validate(record.data)
        assert event.occurred_at == record.occurred_at  # the row's time
        assert (event.message.kind, event.message.created_at) == (None, None)
        assert event.conversation.priority is None
    finally:
        store.close()

    # the client's next message is processed, on the conversation as stored
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_fragment(1, 1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 2)
    server.stop()
    assert [sent["text"] for sent in chatra.sent] == ["Hello Visitor 1", "Got it"]

    result = CliRunner().invoke(cli, ["why", event_id, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "Greet" in result.output
