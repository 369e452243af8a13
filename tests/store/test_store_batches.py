"""State read and written in batches (``read_many``, ``write_many``, ``record_events``,
``begin_call``) and the cache in front of a transaction that uses them: the same answers as
call by call, on every store; on PostgreSQL one statement per batch."""

from __future__ import annotations

import pytest
from store_backends import Backend, event

from rulekit.event import Client, Conversation
from rulekit.store.cached import CachedState, probe
from rulekit.store.codec import EncodedTrace
from rulekit.store.lookups import Lookups, SavedConversation, Saves
from rulekit.store.records import CallStart, JobSpec, NewEvent


def _seed(backend: Backend) -> None:
    with backend.open().transaction() as state:
        state.save_conversation("chat", "k1", Conversation(id="c1", status="open"))
        state.save_conversation("mail", "k1", Conversation(id="c9"))
        state.save_client("chat", Client(id="u1", name="Anna"))
        state.mark_message_seen("chat", "m1")


def test_a_batch_read_answers_as_the_calls_one_by_one(backend: Backend):
    _seed(backend)
    wanted = Lookups(
        conversations={("chat", "k1"), ("chat", "k2"), ("mail", "k1")},
        conversation_ids={("chat", "c1"), ("chat", "c9"), ("mail", "c9")},
        clients={("chat", "u1"), ("mail", "u1")},
        messages={("chat", "m1"), ("chat", "m2"), ("mail", "m1")},
    )
    with backend.open().transaction() as state:
        found = state.read_many(wanted)
        for (channel, key), kept in found.conversations.items():
            stored = state.get_conversation(channel, key)
            assert kept == ((stored.id, stored.model_dump_json()) if stored else None)
        assert set(found.conversations) == wanted.conversations
        assert found.conversation_ids[("chat", "c9")] is None  # an id of another channel
        by_id = found.conversation_ids[("chat", "c1")]
        assert by_id is not None and by_id[0] == "k1"
        assert Conversation.model_validate_json(by_id[1]) == Conversation(id="c1", status="open")
        assert found.conversation_ids[("mail", "c9")] is not None
        assert found.clients[("mail", "u1")] is None
        assert Client.model_validate_json(found.clients[("chat", "u1")] or "") == Client(
            id="u1", name="Anna"
        )
        assert found.messages == {
            ("chat", "m1"): True,
            ("chat", "m2"): False,
            ("mail", "m1"): False,
        }


def test_a_batch_write_saves_everything_and_names_the_messages_seen_before(backend: Backend):
    _seed(backend)
    saves = Saves(
        conversations={
            ("chat", "k1"): SavedConversation(
                "c1",
                "closed",
                "anna@x.io",
                Conversation(id="c1", status="closed").model_dump_json(),
            ),
            ("chat", "k2"): SavedConversation(
                "c2", "open", None, Conversation(id="c2", status="open").model_dump_json()
            ),
        },
        clients={("chat", "u2"): Client(id="u2", name="Boris").model_dump_json()},
        messages={("chat", "m1"), ("chat", "m2")},
    )
    with backend.open().transaction() as state:
        assert state.write_many(saves) == {("chat", "m1")}
    with backend.open().transaction() as state:
        assert state.get_conversation("chat", "k1") == Conversation(id="c1", status="closed")
        assert state.find_conversation("chat", "c2") == (
            "k2",
            Conversation(id="c2", status="open"),
        )
        assert state.open_conversations_by_assignee("chat") == {}  # k1 is closed
        assert state.get_client("chat", "u2") == Client(id="u2", name="Boris")
        assert state.message_seen("chat", "m2")


def test_a_cached_state_reads_once_and_writes_once(backend: Backend):
    _seed(backend)
    store = backend.open()
    with store.transaction() as state:
        cached = CachedState(state)
        cached.prefetch(
            Lookups(
                conversations={("chat", "k1"), ("chat", "k2")},
                conversation_ids={("chat", "c1")},
                clients={("chat", "u1")},
                messages={("chat", "m1"), ("chat", "m2")},
            )
        )
        before = getattr(state, "statements", 0)
        assert cached.get_conversation("chat", "k1") == Conversation(id="c1", status="open")
        assert cached.get_conversation("chat", "k2") is None
        assert cached.find_conversation("chat", "c1") is not None
        assert cached.get_client("chat", "u1") == Client(id="u1", name="Anna")
        assert cached.mark_message_seen("chat", "m1") is False
        assert cached.mark_message_seen("chat", "m2") is True
        cached.save_conversation("chat", "k2", Conversation(id="c2"))
        cached.save_client("chat", Client(id="u1", name="Anna Müller"))
        assert cached.find_conversation("chat", "c2") == ("k2", Conversation(id="c2"))
        assert getattr(state, "statements", 0) == before  # all from memory
        assert cached.flush() == set()
        if state.batches:
            assert state.statements == before + 1  # one statement for every write
        assert cached.flush() == set()  # nothing left
    with store.transaction() as state:
        assert state.get_conversation("chat", "k2") == Conversation(id="c2")
        assert state.get_client("chat", "u1") == Client(id="u1", name="Anna Müller")
        assert state.message_seen("chat", "m2")


def test_a_flush_names_a_message_someone_else_marked_meanwhile(backend: Backend):
    if not backend.durable:
        pytest.skip("one connection: nobody else writes meanwhile")
    store, other = backend.open(), backend.open()
    with store.transaction() as state:
        cached = CachedState(state)
        cached.prefetch(Lookups(messages={("chat", "m5")}))
        assert cached.mark_message_seen("chat", "m5") is True
        if backend.name == "sqlite":  # one writer at a time: the other waits for this one
            assert cached.flush() == set()
            return
        with other.transaction() as elsewhere:
            elsewhere.mark_message_seen("chat", "m5")
        assert cached.flush() == {("chat", "m5")}


def test_a_probe_names_what_a_normalization_reads_and_changes_nothing(backend: Backend):
    _seed(backend)

    def normalize(state):
        conversation = state.get_conversation("chat", "k1") or Conversation(id="c1")
        state.get_client("chat", "u1")
        if state.mark_message_seen("chat", "m3"):
            state.save_conversation("chat", "k1", conversation)
        state.find_conversation("chat", conversation.id)
        state.next_position("round-robin", 3)  # ends the probe: it changes the store
        state.get_client("chat", "never")

    def broken(state):
        state.get_conversation("chat", "k7")
        raise ValueError("a body the provider cannot read")

    wanted = probe([normalize, broken])
    assert wanted == Lookups(
        conversations={("chat", "k1"), ("chat", "k7")},
        conversation_ids={("chat", "c1")},
        clients={("chat", "u1")},
        messages={("chat", "m3")},
    )
    with backend.open().transaction() as state:
        assert not state.message_seen("chat", "m3")


def _jobs(*rules: str) -> list[JobSpec]:
    return [JobSpec(rule, "slack", {"text": rule}, "#support") for rule in rules]


def test_a_round_of_events_is_recorded_as_one_by_one(backend: Backend):
    store = backend.open()
    with store.transaction() as state:
        state.save_conversation("online-chat", "k2", Conversation(id="conv-2"))
        assert state.record_event(event("e0"), inbox_id=None, trace={}, jobs=_jobs("Z"))
    trace = {"rules": [{"name": "A", "matched": True}, {"name": "B", "matched": False}]}
    encoded = EncodedTrace('{"rules":[{"name":"E","matched":true}]}', ["E"])
    with store.transaction() as state:
        recorded = state.record_events(
            [
                NewEvent(event("e1"), None, trace, _jobs("A", "B")),
                NewEvent(event("e0"), None, trace, _jobs("C")),  # recorded before
                NewEvent(
                    event("e2", conversation={"id": "conv-2"}, client={"id": "u2"}),
                    None,
                    {},
                    _jobs("D"),
                ),
                NewEvent(event("e3"), None, encoded),
            ]
        )
        assert recorded == [True, False, True, True]
    assert encoded._data is None  # an encoded trace is written as it is, never decoded
    with store.transaction() as state:
        assert [job.rule for job in state.jobs(event_id="e1")] == ["A", "B"]  # plan order
        assert [job.rule for job in state.jobs(event_id="e0")] == ["Z"]  # nothing enqueued again
        assert [job.rule for job in state.jobs(event_id="e2")] == ["D"]
        assert [job.id for job in state.jobs(event_id="e1")] < [
            job.id for job in state.jobs(event_id="e2")
        ]  # events in order
        assert state.recorded(["e1", "e2", "e3"]) == {"e1", "e2", "e3"}
        assert state.get_event("e1") is not None
        assert state.record_events([]) == []
        # the matches of the events recorded (the redelivered one's counted once, with e1)
        assert {stats.rule: stats.matched for stats in state.rule_stats()} == {
            "A": 1,
            "B": 0,
            "D": 0,
            "E": 1,
            "Z": 0,
        }
        # the conversation's activity: its client as the event named it
        assert _client_id_of(state, "conv-2") == "u2"


def _client_id_of(state, conversation_id: str) -> str | None:
    row = state.execute(
        "SELECT client_id FROM conversations WHERE id = :id", {"id": conversation_id}
    ).fetchone()
    return row["client_id"]


def _statements(state) -> int:
    return getattr(state, "statements", 0)


@pytest.mark.parametrize("count", [2, 12])
def test_a_round_of_events_takes_the_same_statements_however_many_events(
    backend: Backend, count: int
):
    """Recording a round writes each kind of row in one statement (on SQLite one call into the
    driver for all the rows): the statements do not grow with the events."""
    store = backend.open()
    trace = {"rules": [{"name": "A", "matched": True}]}
    with store.transaction() as state:
        state.save_conversation("online-chat", "k1", Conversation(id="conv-1"))
    with store.transaction() as state:
        before = _statements(state)
        state.record_events(
            [NewEvent(event(f"e{n}"), None, trace, _jobs("A", "B")) for n in range(count)]
        )
        assert _statements(state) - before <= (1 if state.batches else 5)
    with store.transaction() as state:
        assert len(state.jobs(limit=100)) == 2 * count


def test_a_batch_write_takes_a_statement_per_kind_of_row_however_many_rows(backend: Backend):
    saves = Saves(
        conversations={
            ("chat", f"k{n}"): SavedConversation(
                f"c{n}", "open", None, Conversation(id=f"c{n}", status="open").model_dump_json()
            )
            for n in range(6)
        },
        clients={
            ("chat", f"u{n}"): Client(id=f"u{n}", name="Anna").model_dump_json() for n in range(6)
        },
        messages={("chat", f"m{n}") for n in range(6)},
    )
    with backend.open().transaction() as state:
        before = _statements(state)
        assert state.write_many(saves) == set()
        assert _statements(state) - before <= (1 if state.batches else 3)
    with backend.open().transaction() as state:
        assert state.find_conversation("chat", "c5") == (
            "k5",
            Conversation(id="c5", status="open"),
        )
        assert state.get_client("chat", "u5") == Client(id="u5", name="Anna")
        assert state.seen_messages("chat", [f"m{n}" for n in range(6)]) == {
            f"m{n}" for n in range(6)
        }


def test_a_call_begins_with_the_pauses_and_the_conversation_read_at_once(backend: Backend):
    store = backend.open()
    with store.transaction() as state:
        state.save_conversation("online-chat", "k1", Conversation(id="conv-1", status="open"))
        state.record_event(event("e1"), inbox_id=None, trace={}, jobs=_jobs("A", "B"))
    with store.transaction() as state:
        job_a, job_b = state.claim_jobs("daemon-a", lease=30)
    conversation = ("online-chat", "conv-1")
    with store.transaction() as state:
        if state.shares_pacing:  # several daemons agree on pauses through the store
            state.pause_pace("autoreply:online-chat", 30)
            paused = state.begin_call(
                job_a.id, "daemon-a", lease=30, paused=["autoreply:online-chat"]
            )
            assert not paused.started and 25 < paused.wait <= 30
            assert state.get_job(job_a.id).call_started_at is None  # nothing recorded
        assert state.begin_call(job_b.id, "daemon-a", lease=30) == CallStart(False)  # A first
        started = state.begin_call(
            job_a.id, "daemon-a", lease=30, paused=["other"], conversation=conversation
        )
        assert started == CallStart(True, 0.0, Conversation(id="conv-1", status="open"))
        assert state.get_job(job_a.id).call_started_by == "daemon-a"
        with pytest.raises(KeyError):
            state.begin_call(999, "daemon-a", lease=30)
