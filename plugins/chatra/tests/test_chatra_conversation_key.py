"""The conversation key read at ingest, which keeps a conversation's events in order."""

from __future__ import annotations

import json

import pytest
from chatra_samples import CHANNEL, make_provider, sample_body
from rulekit.actions.tag import Tag, TagParams
from rulekit.config import Config
from rulekit.event import Client, Conversation, Event
from rulekit.store import MemoryStore
from rulekit.store.sqlite import SQLiteStore

from rulekit_chatra.payload import parse_body


def test_the_key_is_the_client_id_of_any_webhook():
    provider = make_provider()
    started = provider.conversation_key(json.loads(sample_body("chat_reopened_2_started.json")))
    transcript = provider.conversation_key(
        json.loads(sample_body("chat_reopened_1_transcript.json"))
    )
    assert started == transcript == "q8w7e6r5t4y3u2i1o9p8a7s6d5f4g3h2j1k9l8zx"


@pytest.mark.parametrize(
    "data",
    [[], [1], {}, {"client": 5}, {"client": {"id": ""}}, {"client": {"id": " "}}],
)
def test_no_key_for_bodies_that_do_not_name_a_client(data):
    assert make_provider().conversation_key(data) is None


@pytest.mark.parametrize("client_id", ["v42", " v42", "v42\t", "\u3000v42 ", 42, " 42 "])
def test_the_key_is_the_client_id_as_the_parser_reads_it(client_id):
    """Bodies the parser files under one client share the key (which orders them)."""
    body = json.loads(sample_body("chat_started_anonymous.json"))
    body["client"]["id"] = client_id
    provider = make_provider()
    parsed = parse_body(json.dumps(body))
    assert provider.conversation_key(body) == parsed.client.id == str(client_id).strip()


VISITOR = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_conversation_a_job_stored_first_stays_one_conversation(kind, tmp_path):
    """A job (``tag``) finding no conversation stores it under its id; Chatra's webhooks
    stored theirs under the client id: the next webhook started a second conversation, the
    tag out of the rules' sight."""
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "state.sqlite3")
    conversation_id = f"{CHANNEL}:{VISITOR}"
    given = Event(
        id="given-1",
        channel=CHANNEL,
        event="message",
        conversation=Conversation(id=conversation_id),
        client=Client(id=VISITOR),
    )
    try:
        with store.transaction() as state:
            Tag().change_state(TagParams(add=["vip"]), given, state, Config())
        with store.transaction() as state:
            (event,) = make_provider().parse(sample_body("chat_started_anonymous.json"), state)
        assert event.conversation.id == conversation_id
        assert event.conversation.tags == ["vip"]
        with store.transaction() as state:
            (event,) = make_provider().parse(
                sample_body("chat_fragment_client_message.json"), state
            )
            found = state.find_conversation(CHANNEL, conversation_id)
        assert event.conversation.tags == ["vip"]
        assert found is not None and found[1].tags == ["vip"]
        assert found[1].external_id == event.conversation.external_id is not None
        if isinstance(store, SQLiteStore):
            with store.transaction() as state:
                rows = state.execute(
                    "SELECT key FROM conversations WHERE channel = :channel",
                    {"channel": CHANNEL},
                ).fetchall()
            assert len(rows) == 1
    finally:
        store.close()
