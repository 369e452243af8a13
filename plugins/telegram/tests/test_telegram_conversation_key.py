"""A conversation rulekit stored first (``tag``, ``set`` or ``assign`` of an event given already
normalized, as ``rulekit test`` takes them, or the reply times kept for an event) is the one the
chat's next update continues, with its state: one row, not two. rulekit stored it under its id,
Telegram looks its conversations up by the chat id: the next update started a second one and the
rules no longer saw the tags, fields or times set."""

from __future__ import annotations

import pytest
from rulekit.actions.set_state import SetParams, SetState
from rulekit.actions.tag import Tag, TagParams
from rulekit.config import Config
from rulekit.event import Client, Conversation, Event
from rulekit.runtime.replies import note_replies
from rulekit.store import MemoryStore
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.telegram_updates import Updates
from telegram_samples import ANN, CHANNEL, encode, make_provider

CONVERSATION = f"{CHANNEL}:{ANN.id}"


def _given(event: str = "message") -> Event:
    return Event(
        id="given-1",
        channel=CHANNEL,
        event=event,
        conversation=Conversation(id=CONVERSATION),
        client=Client(id=str(ANN.id)),
    )


def _rows(store: SQLiteStore) -> list[str]:
    with store.transaction() as state:
        rows = state.execute(
            "SELECT key FROM conversations WHERE channel = :channel", {"channel": CHANNEL}
        ).fetchall()
    return [row["key"] for row in rows]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_conversation_the_core_stored_first_is_the_one_the_chat_continues(kind, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "state.sqlite3")
    provider, updates = make_provider(), Updates()
    try:
        with store.transaction() as state:
            Tag().change_state(TagParams(add=["vip"]), _given(), state, Config())
            SetState().change_state(SetParams(priority="high"), _given(), state, Config())
        with store.transaction() as state:
            (event,) = provider.parse(encode(updates.message(ANN, "hello")), state)
        assert event.conversation.id == CONVERSATION
        assert (event.conversation.tags, event.conversation.priority) == (["vip"], "high")
        with store.transaction() as state:
            (event,) = provider.parse(encode(updates.message(ANN, "again")), state)
            found = state.find_conversation(CHANNEL, CONVERSATION)
        assert event.event == "message" and event.conversation.tags == ["vip"]
        assert found is not None and found[1].tags == ["vip"]
        if kind == "sqlite":
            assert _rows(store) == [str(ANN.id)]
    finally:
        store.close()


def test_reply_times_stored_first_stay_with_the_chat(tmp_path):
    store = SQLiteStore(tmp_path / "state.sqlite3")
    provider, updates = make_provider(), Updates()
    try:
        with store.transaction() as state:
            note_replies(state, _given("agent_replied"))
        with store.transaction() as state:
            (event,) = provider.parse(encode(updates.message(ANN, "hello")), state)
        assert event.event == "message"  # the conversation was there: not created
        assert event.conversation.last_agent_reply_at is not None
        assert _rows(store) == [str(ANN.id)]
    finally:
        store.close()
