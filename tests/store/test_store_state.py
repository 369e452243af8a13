"""Behaviour of the conversation state, the same for every store (see conftest's ``backend``)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rulekit.errors import StoreError
from rulekit.event import Client, Conversation
from rulekit.store import JobSpec
from rulekit.store.records import utc

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_conversation_round_trip(store):
    conversation = Conversation(
        id="conv-1",
        external_id="chat-9",
        status="open",
        group="support",
        assignee="Ann@Example.com",
        tags=["vip", "de"],
        page="https://shop.example/cart",
        link="https://app.chatra.io/chats/9",
    )
    with store.transaction() as state:
        assert state.get_conversation("online-chat", "client-1") is None
        state.save_conversation("online-chat", "client-1", conversation)
    with store.transaction() as state:
        assert state.get_conversation("online-chat", "client-1") == conversation
        assert state.get_conversation("other", "client-1") is None
        assert state.find_conversation("online-chat", "conv-1") == ("client-1", conversation)
        assert state.find_conversation("other", "conv-1") is None
        assert state.find_conversation("online-chat", "conv-2") is None
        state.save_conversation(
            "online-chat",
            "client-1",
            conversation.model_copy(update={"status": "closed", "tags": []}),
        )
    with store.transaction() as state:
        found = state.get_conversation("online-chat", "client-1")
        assert (found.status, found.tags, found.assignee) == ("closed", [], "Ann@Example.com")


def test_a_returned_conversation_is_a_copy(store):
    with store.transaction() as state:
        state.save_conversation("c", "k", Conversation(id="1", tags=["a"]))
        state.get_conversation("c", "k").tags.append("changed")
    with store.transaction() as state:
        assert state.get_conversation("c", "k").tags == ["a"]


def test_client_round_trip(store):
    client = Client(
        id="client-1",
        name="Anna Müller",
        display_name="Visitor 4p40",
        email="anna@example.com",
        ip="203.0.113.7",
        language="de",
        country="DE",
        last_visit=datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        custom={"plan": "pro", "orders": [1, 2], "nested": {"ok": True}},
    )
    with store.transaction() as state:
        assert state.get_client("online-chat", "client-1") is None
        state.save_client("online-chat", client)
        with pytest.raises(ValueError, match="without an id"):
            state.save_client("online-chat", Client(name="nobody"))
    with store.transaction() as state:
        found = state.get_client("online-chat", "client-1")
        assert found == client
        assert found.last_visit == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
        assert state.get_client("other", "client-1") is None


def test_open_conversations_by_assignee(store):
    rows = [
        ("online-chat", "a", "open", "Ann@example.com"),
        ("online-chat", "b", "open", "ann@EXAMPLE.com"),
        ("online-chat", "c", "closed", "ann@example.com"),
        ("online-chat", "d", "open", "bob@example.com"),
        ("online-chat", "e", "open", None),
        ("telegram", "f", "open", "bob@example.com"),
    ]
    with store.transaction() as state:
        assert state.open_conversations_by_assignee() == {}
        for channel, key, status, assignee in rows:
            conversation = Conversation(id=key, status=status, assignee=assignee)
            state.save_conversation(channel, key, conversation)
    with store.transaction() as state:
        assert state.open_conversations_by_assignee() == {
            "ann@example.com": 2,
            "bob@example.com": 2,
        }
        assert state.open_conversations_by_assignee("online-chat") == {
            "ann@example.com": 2,
            "bob@example.com": 1,
        }
        assert state.open_conversations_by_assignee("nowhere") == {}
        # reassigning moves the count: the indexed columns follow the saved conversation
        state.save_conversation("online-chat", "a", Conversation(id="a", status="closed"))
    with store.transaction() as state:
        assert state.open_conversations_by_assignee("online-chat") == {
            "ann@example.com": 1,
            "bob@example.com": 1,
        }


def test_seen_message_ids(store):
    with store.transaction() as state:
        assert not state.message_seen("online-chat", "m1")
        assert state.mark_message_seen("online-chat", "m1") is True
        assert state.mark_message_seen("online-chat", "m1") is False
        assert state.mark_message_seen("other", "m1") is True
    with store.transaction() as state:
        assert state.message_seen("online-chat", "m1")
        assert not state.message_seen("online-chat", "m2")
        assert state.mark_message_seen("online-chat", "m1") is False


def test_message_ids_are_marked_and_read_many_at_once(store):
    with store.transaction() as state:
        state.mark_message_seen("online-chat", "m1")
        marked = state.mark_messages_seen("online-chat", ["m0", "m1", "m2", "m0", "m3"])
        assert marked == [True, False, True, False, True]
        assert state.mark_messages_seen("online-chat", []) == []
        assert state.mark_messages_seen("online-chat", ["m2"]) == [False]
        assert state.mark_messages_seen("other", ["m1", "m9"]) == [True, True]
        assert state.seen_messages("online-chat", ["m1", "m2", "m4", "m1"]) == {"m1", "m2"}
        assert state.seen_messages("online-chat", []) == set()
    with store.transaction() as state:
        assert state.message_seen("online-chat", "m3") and not state.message_seen("other", "m3")
        # more ids than one statement binds
        many = [f"n{index}" for index in range(1234)]
        assert state.mark_messages_seen("online-chat", many[::2]) == [True] * 617
        assert state.mark_messages_seen("online-chat", many) == [i % 2 == 1 for i in range(1234)]
        assert state.seen_messages("online-chat", [*many, "m0", "x"]) == {*many, "m0"}


def test_a_conversation_and_its_client_are_read_at_once(store):
    conversation = Conversation(id="online-chat:u1", status="open", tags=["vip"])
    client = Client(id="u1", name="Anna", country="Germany")
    with store.transaction() as state:
        assert state.get_conversation_and_client("online-chat", "u1") == (None, None)
        state.save_client("online-chat", client)
        assert state.get_conversation_and_client("online-chat", "u1") == (None, client)
        state.save_conversation("online-chat", "u1", conversation)
        state.save_client("other", Client(id="u1", name="Other"))
    with store.transaction() as state:
        assert state.get_conversation_and_client("online-chat", "u1") == (conversation, client)
        assert state.get_conversation_and_client("online-chat", "u2") == (None, None)
        state.save_conversation("online-chat", "u2", conversation)
        assert state.get_conversation_and_client("online-chat", "u2") == (conversation, None)


def test_cooldowns(store):
    berlin = timezone(timedelta(hours=2))
    with store.transaction() as state:
        assert state.cooldown_until("greet", "conv-1") is None
        state.set_cooldown("greet", "conv-1", T0)
        state.set_cooldown("greet", "conv-2", T0 + timedelta(hours=1))
        state.set_cooldown("ping", "conv-1", datetime(2024, 5, 1, 16, 0, tzinfo=berlin))
    with store.transaction() as state:
        assert state.cooldown_until("greet", "conv-1") == T0
        assert state.cooldown_until("greet", "conv-1").tzinfo is not None
        assert state.cooldown_until("greet", "conv-2") == T0 + timedelta(hours=1)
        assert state.cooldown_until("ping", "conv-1") == T0 + timedelta(hours=2)
        assert state.cooldown_until("ping", "conv-2") is None
        state.set_cooldown("greet", "conv-1", T0 + timedelta(minutes=30))
    with store.transaction() as state:
        assert state.cooldown_until("greet", "conv-1") == T0 + timedelta(minutes=30)
        # several conversations' marks in one read, each asked one a key
        assert state.cooldowns_for(["conv-1", "conv-3", "conv-2"]) == {
            "conv-1": {"greet": T0 + timedelta(minutes=30), "ping": T0 + timedelta(hours=2)},
            "conv-3": {},
            "conv-2": {"greet": T0 + timedelta(hours=1)},
        }
        assert state.cooldowns_for([]) == {}


def test_next_position(store):
    with store.transaction() as state:
        assert [state.next_position("support", 3) for _ in range(5)] == [0, 1, 2, 0, 1]
        assert state.next_position("sales", 2) == 0
        assert state.next_position("empty-group", 0) == 0
    with store.transaction() as state:
        assert state.next_position("support", 3) == 2
        assert state.next_position("sales", 2) == 1


def test_next_free_position_moves_as_next_position_would_until_a_free_place(store):
    """One step of the counter past every place skipped: the same places, and the same
    counter after, as asking ``next_position`` until it answers a free place."""
    rng = random.Random(7)
    with store.transaction() as state:
        for _ in range(200):
            size = rng.randint(1, 9)
            free = rng.sample(range(size), rng.randint(1, size))
            expected = state.next_position("loop", size)
            while expected not in free:
                expected = state.next_position("loop", size)
            assert state.next_free_position("step", size, free) == expected
        assert state.next_position("step", 1_000_003) == state.next_position("loop", 1_000_003)
        with pytest.raises(ValueError):
            state.next_free_position("step", 3, [])
        with pytest.raises(ValueError):
            state.next_free_position("step", 3, [3])


def test_next_free_position_is_one_statement_whatever_the_places_skipped(store):
    with store.transaction() as state:
        if not hasattr(state, "statements"):
            pytest.skip("a store that does not count its statements")
        state.next_free_position("support", 1000, [999])  # a new counter
        before = state.statements
        assert state.next_free_position("support", 1000, [998]) == 998  # 999 places skipped
        assert state.next_free_position("support", 1000, list(range(0, 1000, 7))) == 0
        assert state.statements == before + 2


def test_next_free_position_is_fair_across_threads_and_connections(backend, threads):
    """Pickers on two connections, each skipping the same places, take the free ones in turn:
    none is picked twice before the others had theirs."""
    stores = [backend.open(), backend.open()]
    per_thread, count = 30, 4
    results: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        store = stores[index % 2]
        for _ in range(per_thread):
            with store.transaction() as state:
                place = state.next_free_position("support", 5, [1, 3, 4])
            with lock:
                results.append(place)

    threads(work, count)
    assert Counter(results) == {1: 40, 3: 40, 4: 40}


def test_a_failed_transaction_leaves_nothing(store, make_event):
    class Boom(Exception):
        pass

    with store.transaction() as state:
        state.next_position("support", 10)
    with pytest.raises(Boom), store.transaction() as state:
        state.save_conversation("c", "k", Conversation(id="1", status="open", assignee="a@x"))
        state.save_client("c", Client(id="client-1"))
        state.mark_message_seen("c", "m1")
        state.set_cooldown("rule", "1", T0)
        state.next_position("support", 10)
        inbox_id, _ = state.append_inbox("c", b"{}", delivery_key="d1", now=T0)
        state.record_event(
            make_event("e1"), inbox_id=inbox_id, trace={}, jobs=[JobSpec("r", "a", {}, "d")]
        )
        raise Boom
    with store.transaction() as state:
        assert state.get_conversation("c", "k") is None
        assert state.get_client("c", "client-1") is None
        assert not state.message_seen("c", "m1")
        assert state.cooldown_until("rule", "1") is None
        assert state.open_conversations_by_assignee() == {}
        assert state.next_position("support", 10) == 1  # only the committed advance counted
        assert state.inbox_items() == []
        assert state.get_event("e1") is None
        assert state.jobs() == []
        assert state.history() == []
        # the same delivery key and event id are new again: nothing of them was kept
        assert state.append_inbox("c", b"{}", delivery_key="d1", now=T0)[1] is True
        assert state.record_event(make_event("e1"), inbox_id=None, trace={})


def test_committed_changes_are_seen_by_another_connection(backend):
    first, second = backend.open(), backend.open()
    with first.transaction() as state:
        state.save_conversation("c", "k", Conversation(id="1", status="open"))
        state.next_position("support", 5)
    with second.transaction() as state:
        assert state.get_conversation("c", "k") == Conversation(id="1", status="open")
        assert state.next_position("support", 5) == 1


def test_next_position_is_atomic_across_threads_and_connections(backend, threads):
    stores = [backend.open(), backend.open()]
    per_thread, count = 50, 4
    results: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        store = stores[index % 2]
        for _ in range(per_thread):
            with store.transaction() as state:
                position = state.next_position("support", 1_000_000)
            with lock:
                results.append(position)

    threads(work, count)
    assert sorted(results) == list(range(per_thread * count))


def test_a_closed_store_refuses_transactions(backend):
    store = backend.open()
    with store.transaction() as state:
        state.set_cooldown("rule", "1", T0)
    store.close()
    with pytest.raises(StoreError, match="closed"), store.transaction():
        pass


def test_durable_state_survives_closing_and_reopening(backend, make_event):
    if not backend.durable:
        pytest.skip(f"the {backend.name} store keeps nothing after it is closed")
    store = backend.open()
    with store.transaction() as state:
        state.save_conversation("c", "k", Conversation(id="1", status="open", assignee="a@x"))
        state.save_client("c", Client(id="client-1", email="a@example.com"))
        state.mark_message_seen("c", "m1")
        state.set_cooldown("rule", "1", T0)
        state.next_position("support", 10)
        inbox_id, _ = state.append_inbox("c", b"body", delivery_key="d1", now=T0)
        state.record_event(
            make_event("e1"),
            inbox_id=inbox_id,
            trace={"matched": ["r"]},
            jobs=[JobSpec("r", "slack", {"text": "hi"}, "slack:#ops")],
        )
    store.close()

    reopened = backend.open()
    with reopened.transaction() as state:
        assert state.get_conversation("c", "k").assignee == "a@x"
        assert state.get_client("c", "client-1").email == "a@example.com"
        assert state.message_seen("c", "m1")
        assert state.cooldown_until("rule", "1") == T0
        assert state.next_position("support", 10) == 1
        assert state.append_inbox("c", b"body", delivery_key="d1") == (inbox_id, False)
        assert state.get_event("e1").trace == {"matched": ["r"]}
        assert [job.params for job in state.jobs(event_id="e1")] == [{"text": "hi"}]


def test_times_come_back_in_utc(store):
    with store.transaction() as state:
        state.set_cooldown("r", "1", datetime(2024, 5, 1, 12, 0))  # naive: taken as UTC
        assert utc(state.cooldown_until("r", "1")) == T0
