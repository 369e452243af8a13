"""A provider's recorded calls on the state: replayed as they were made, whatever the provider
did to the models afterwards; a different answer means the state changed."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta

import pytest

from rulekit.event import Client, Conversation
from rulekit.store.base import State
from rulekit.store.cached import CachedState
from rulekit.store.memory import MemoryStore
from rulekit.store.recording import RecordingState, StateChanged


class RolledBack(Exception):
    pass


def test_replay_writes_what_was_saved_even_if_the_provider_changed_it_afterwards():
    store = MemoryStore()
    conversation = Conversation(id="c1", tags=["vip"], fields={"order": {"id": 7}})
    client = Client(id="u1", name="Anna", country="Germany", custom={"plan": ["gold"]})
    with pytest.raises(RolledBack), store.transaction() as state:
        recording = RecordingState(state)
        recording.save_conversation("chat", "k1", conversation)
        recording.save_client("chat", client)
        assert recording.get_conversation("chat", "k1") == conversation
        raise RolledBack  # as the daemon normalizes: nothing of it is kept
    conversation.tags.append("changed later")
    conversation.fields["order"]["id"] = 8
    client.custom["plan"].append("changed later")
    with store.transaction() as state:
        assert state.get_conversation("chat", "k1") is None  # nothing was kept
        recording.recording.replay(state)  # the answers are what they were: no StateChanged
    with store.transaction() as state:
        saved = state.get_conversation("chat", "k1")
        assert saved == Conversation(id="c1", tags=["vip"], fields={"order": {"id": 7}})
        assert state.get_client("chat", "u1") == Client(
            id="u1", name="Anna", country="Germany", custom={"plan": ["gold"]}
        )
        assert state.find_conversation("chat", "c1") == ("k1", saved)


def test_an_answer_that_differs_on_replay_is_a_changed_state():
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="open"))
    with store.transaction() as state:
        recording = RecordingState(state)
        assert recording.find_conversation("chat", "c1") is not None
        assert recording.mark_message_seen("chat", "m1") is True
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="closed"))
    with pytest.raises(StateChanged, match="find_conversation"), store.transaction() as state:
        recording.recording.replay(state)


@pytest.mark.parametrize("cached", [False, True], ids=["state", "cached"])
@pytest.mark.parametrize("read", ["get_conversation_and_client", "find_conversation"])
def test_a_read_compared_as_stored_text_still_sees_every_change(read, cached):
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="open"))
        state.save_client("chat", Client(id="k1", name="Anna"))
    args = ("chat", "k1") if read == "get_conversation_and_client" else ("chat", "c1")
    with store.transaction() as state:
        recording = RecordingState(CachedState(state) if cached else state)
        answer = getattr(recording, read)(*args)
        conversation = answer[0] if read == "get_conversation_and_client" else answer[1]
        conversation.status = "changed by the provider afterwards"
    with store.transaction() as state:
        recording.recording.replay(state)  # nothing changed
        state.save_client("chat", Client(id="k1", name="Anna B."))
    if read == "get_conversation_and_client":  # the client is part of the answer
        with pytest.raises(StateChanged, match=read), store.transaction() as state:
            recording.recording.replay(state)
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="closed"))
    with pytest.raises(StateChanged, match=read), store.transaction() as state:
        recording.recording.replay(state)


def test_the_same_models_stored_as_other_text_are_the_same_answer():
    """Rows written by another version's encoder (other spacing or key order) answer the same
    models: the replay then compares the models, and the state has not changed."""
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="open"))
    with store.transaction() as state:
        recording = RecordingState(state)
        assert recording.get_conversation_and_client("chat", "k1")[0] is not None
        assert recording.find_conversation("chat", "c1") is not None
    with store.transaction() as state:
        stored = state.conversation_and_client_text("chat", "k1")[0]
        assert stored is not None
        respaced = json.dumps(dict(reversed(json.loads(stored).items())), indent=1)
        state.execute("UPDATE conversations SET data = :data", {"data": respaced})
    with store.transaction() as state:
        assert state.conversation_and_client_text("chat", "k1")[0] == respaced
        recording.recording.replay(state)  # no StateChanged


def test_presence_is_recorded_and_a_change_of_it_is_a_changed_state():
    store = MemoryStore()
    with store.transaction() as state:
        later = datetime.now(UTC) + timedelta(hours=1)
        state.set_presence("ann@example.com", status="online", connected_until=later)
    with store.transaction() as state:
        recording = RecordingState(state)
        assert recording.presence() == {"ann@example.com": "online"}
    with store.transaction() as state:
        recording.recording.replay(state)  # the same presence: nothing changed
        state.set_presence("ann@example.com", status="away")
    with pytest.raises(StateChanged, match="presence"), store.transaction() as state:
        recording.recording.replay(state)


def test_a_normalization_that_is_rolled_back_writes_nothing_yet_reads_what_it_wrote():
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k0", Conversation(id="c0", assignee="a@x.io"))
        state.mark_message_seen("chat", "m0")
    with store.transaction() as state:
        statements = state.statements
        unwritten = CachedState(state)
        unwritten.save_conversation("chat", "k1", Conversation(id="c1", tags=["vip"]))
        unwritten.save_conversation("chat", "k0", Conversation(id="c0-new"))
        unwritten.save_client("chat", Client(id="u1", name="Anna"))
        assert unwritten.mark_message_seen("chat", "m1") is True
        assert unwritten.mark_message_seen("chat", "m1") is False
        assert unwritten.mark_message_seen("chat", "m0") is False  # seen before
        assert state.statements - statements == 2  # the two reads of message ids only
        assert unwritten.get_conversation("chat", "k1") == Conversation(id="c1", tags=["vip"])
        assert unwritten.find_conversation("chat", "c1") == (
            "k1",
            Conversation(id="c1", tags=["vip"]),
        )
        assert unwritten.find_conversation("chat", "c0") is None  # k0 has another id now
        assert unwritten.get_client("chat", "u1") == Client(id="u1", name="Anna")
        assert unwritten.message_seen("chat", "m1") and not unwritten.message_seen("chat", "m2")
        with pytest.raises(ValueError, match="without an id"):
            unwritten.save_client("chat", Client(name="nobody"))
        assert state.get_conversation("chat", "k1") is None  # nothing reached the store
        # a count depends on every conversation: what was kept is written first
        assert unwritten.open_conversations_by_assignee("chat") == {}
        assert state.get_conversation("chat", "k1") == Conversation(id="c1", tags=["vip"])
        assert state.message_seen("chat", "m1")


def test_many_at_once_through_a_cached_state_and_its_replay():
    store = MemoryStore()
    with store.transaction() as state:
        state.mark_message_seen("chat", "m1")
        state.save_client("chat", Client(id="u1", name="Anna"))
    with pytest.raises(RolledBack), store.transaction() as state:
        unwritten = CachedState(state)
        recording = RecordingState(unwritten)
        assert recording.mark_messages_seen("chat", ["m1", "m2", "m2"]) == [False, True, False]
        assert recording.mark_messages_seen("chat", ["m2", "m3"]) == [False, True]
        assert recording.seen_messages("chat", ["m1", "m2", "m4"]) == {"m1", "m2"}
        assert recording.get_conversation_and_client("chat", "u1") == (
            None,
            Client(id="u1", name="Anna"),
        )
        recording.save_conversation("chat", "u1", Conversation(id="c1"))
        assert recording.get_conversation_and_client("chat", "u1") == (
            Conversation(id="c1"),
            Client(id="u1", name="Anna"),
        )
        assert not state.message_seen("chat", "m2")  # nothing reached the store
        raise RolledBack
    with store.transaction() as state:
        recording.recording.replay(state)
        assert state.seen_messages("chat", ["m1", "m2", "m3"]) == {"m1", "m2", "m3"}
        assert state.get_conversation("chat", "u1") == Conversation(id="c1")
    with pytest.raises(StateChanged), store.transaction() as state:
        recording.recording.replay(state)  # m2 is no longer new


STATE_METHODS = sorted(
    name
    for name, member in vars(State).items()
    if callable(member) and not name.startswith("_") and name != "transaction"
)


@pytest.mark.parametrize("method", STATE_METHODS)
def test_a_cached_state_answers_every_state_method(method):
    """What a provider or an action may ask the state during a normalization (presence, the
    assignment lock, every read and write) is answered through ``CachedState`` as by the store
    itself: nothing falls through to the base class's refusal (a console assignment to a group
    got a 500 when it could not tell who is online)."""
    defined_by = next(klass for klass in CachedState.__mro__ if method in vars(klass))
    if defined_by is State:
        source = inspect.getsource(getattr(State, method))
        assert "NotImplementedError" not in source, f"CachedState lacks {method}"


def test_presence_and_the_assignment_lock_pass_through_a_cached_state():
    store = MemoryStore()
    now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    with store.transaction() as state:
        state.set_presence("anna@example.com", connected_until=now + timedelta(minutes=1), now=now)
    with pytest.raises(RolledBack), store.transaction() as state:
        unwritten = CachedState(state)
        unwritten.hold_assignments()
        assert RecordingState(unwritten).presence(now=now) == {"anna@example.com": "online"}
        unwritten.set_presence(
            "boris@example.com", status="away", connected_until=now + timedelta(minutes=1), now=now
        )
        assert unwritten.presence(now=now)["boris@example.com"] == "away"
        raise RolledBack


@pytest.mark.parametrize("read", ["get_conversation_and_client", "find_conversation"])
def test_a_row_another_version_wrote_and_rewrote_is_still_the_same_answer(read):
    """The recorded answer is the stored JSON as it was; when another version's encoder wrote
    it, and writes the same models as other text again before the replay, the replay compares
    the models: the state has not changed."""
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="open"))

    def rewrite(indent: int) -> None:
        with store.transaction() as state:
            stored = state.conversation_and_client_text("chat", "k1")[0]
            assert stored is not None
            respaced = json.dumps(dict(reversed(json.loads(stored).items())), indent=indent)
            state.execute("UPDATE conversations SET data = :data", {"data": respaced})

    rewrite(1)
    args = ("chat", "k1") if read == "get_conversation_and_client" else ("chat", "c1")
    with store.transaction() as state:
        recording = RecordingState(CachedState(state))
        assert getattr(recording, read)(*args) is not None
    rewrite(2)
    with store.transaction() as state:
        recording.recording.replay(CachedState(state))  # no StateChanged
        recording.recording.replay(state)


def test_saves_through_a_cache_are_encoded_once_and_replayed_as_recorded():
    """A provider's saves through a cached state are kept as the JSON written then: the replay
    through a cache saves that very text, whatever the provider did to its models since."""
    store = MemoryStore()
    conversation = Conversation(id="c1", status="open", assignee="Anna@Example.com", tags=["vip"])
    client = Client(id="u1", name="Anna")
    with pytest.raises(RolledBack), store.transaction() as state:
        recording = RecordingState(CachedState(state))
        recording.save_conversation("chat", "u1", conversation)
        recording.save_client("chat", client)
        assert recording.find_conversation("chat", "c1") == ("u1", conversation)
        raise RolledBack
    written = conversation.model_dump_json()
    conversation.tags.append("changed later")
    client.name = "changed later"
    with store.transaction() as state:
        cached = CachedState(state)
        recording.recording.replay(cached)
        assert cached.conversation_and_client_text("chat", "u1") == (
            written,
            Client(id="u1", name="Anna").model_dump_json(),
        )
        assert cached.flush() == set()
    with store.transaction() as state:
        assert state.conversation_and_client_text("chat", "u1")[0] == written
        assert state.open_conversations_by_assignee("chat") == {"anna@example.com": 1}
        assert state.get_client("chat", "u1") == Client(id="u1", name="Anna")


def test_a_conversation_found_where_it_was_saved_is_not_read_again_on_replay():
    """What a replay reads ahead leaves out the lookup of a conversation by id that found the
    one the provider had just saved (the cache answers it, as it did); a conversation found
    under another key is read again."""
    store = MemoryStore()
    with store.transaction() as state:
        state.save_conversation("chat", "k9", Conversation(id="c9"))
    with pytest.raises(RolledBack), store.transaction() as state:
        recording = RecordingState(CachedState(state))
        recording.save_conversation("chat", "k1", Conversation(id="c1"))
        assert recording.find_conversation("chat", "c1") is not None
        assert recording.find_conversation("chat", "c9") is not None  # stored under k9
        assert recording.find_conversation("chat", "c2") is None
        raise RolledBack
    assert recording.recording.lookups().conversation_ids == {("chat", "c9"), ("chat", "c2")}
    with store.transaction() as state:
        recording.recording.replay(CachedState(state))
