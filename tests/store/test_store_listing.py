"""The conversation list and a conversation's events, on every store: newest activity first,
filters, search, paging by position, and reads that do not hold writers back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from store_backends import Backend, event

from rulekit.event import Client, Conversation
from rulekit.store import JournaledStore
from rulekit.store.listing import ConversationQuery
from rulekit.store.records import JobSpec

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def seed(store: JournaledStore) -> None:
    """Four conversations on two channels; c3 has the latest event, c1 the earliest."""
    specs = [
        ("online-chat", "c1", "k1", "open", "ann@example.com", ["vip"], "Maria Lopez"),
        ("online-chat", "c2", "k2", "closed", None, [], "Visitor 4p40"),
        ("webhook", "c3", "k3", "open", None, ["vip", "late"], "Ivan"),
        ("online-chat", "c4", "k4", "open", "bob@example.com", [], None),
    ]
    order = ["c1", "c2", "c4", "c3"]
    with store.transaction() as state:
        for channel, cid, key, status, assignee, tags, name in specs:
            conversation = Conversation(id=cid, status=status, assignee=assignee, tags=tags)
            state.save_conversation(channel, key, conversation)
            client = Client(id=f"client-{key}", name=name, email=f"{key}@example.org")
            state.save_client(channel, client)
    for minute, cid in enumerate(order):
        channel = "webhook" if cid == "c3" else "online-chat"
        with store.transaction() as state:
            state.record_event(
                event(
                    f"e-{cid}",
                    channel=channel,
                    conversation={"id": cid},
                    client={"id": f"client-k{cid[1]}"},
                ),
                inbox_id=None,
                trace={},
                now=T0 + timedelta(minutes=minute),
            )


def ids(store: JournaledStore, **query: object) -> list[str | None]:
    with store.reading() as state:
        found = state.list_conversations(ConversationQuery(**query))  # type: ignore[arg-type]
    return [summary.conversation.id for summary in found]


def test_conversations_are_listed_newest_activity_first(store: JournaledStore) -> None:
    seed(store)
    assert ids(store) == ["c3", "c4", "c2", "c1"]
    with store.reading() as state:
        first = state.list_conversations(ConversationQuery(limit=1))[0]
    assert first.position.active_at == T0 + timedelta(minutes=3)
    assert first.client is not None and first.client.name == "Ivan"


def test_a_new_event_moves_its_conversation_to_the_top(store: JournaledStore) -> None:
    seed(store)
    with store.transaction() as state:
        state.record_event(
            event("e-c1-again", conversation={"id": "c1"}),
            inbox_id=None,
            trace={},
            now=T0 + timedelta(hours=1),
        )
    assert ids(store)[0] == "c1"


def test_filters_select_by_channel_status_assignee_and_tag(store: JournaledStore) -> None:
    seed(store)
    assert ids(store, channels=frozenset({"online-chat"})) == ["c4", "c2", "c1"]
    assert ids(store, channels=frozenset()) == []
    assert ids(store, status="closed") == ["c2"]
    assert ids(store, assignee="ANN@example.com") == ["c1"]
    assert ids(store, unassigned=True) == ["c3", "c2"]
    assert ids(store, tag="vip") == ["c3", "c1"]
    assert ids(store, tag="vi") == []


def test_open_lists_a_conversation_without_a_status_as_max_open_counts_it(
    store: JournaledStore,
) -> None:
    """A conversation whose channel reports no status (a generic webhook's) is open until it is
    closed: the list's open filter shows what counts against its agent's max_open."""
    seed(store)
    with store.transaction() as state:
        state.save_conversation("webhook", "k5", Conversation(id="c5", assignee="ann@example.com"))
    assert sorted(ids(store, status="open")) == ["c1", "c3", "c4", "c5"]
    assert ids(store, status="closed") == ["c2"]


def test_search_finds_the_clients_name_email_and_the_id(store: JournaledStore) -> None:
    seed(store)
    assert ids(store, text="lopez") == ["c1"]
    assert ids(store, text="K2@EXAMPLE") == ["c2"]
    assert ids(store, text="4p40") == ["c2"]
    assert ids(store, text="c4") == ["c4"]
    # LIKE's wildcards are text like any other
    assert ids(store, text="%") == []
    assert ids(store, text="_") == []


def test_pages_follow_each_other_without_gaps_or_repeats(store: JournaledStore) -> None:
    seed(store)
    seen: list[str | None] = []
    after = None
    while True:
        with store.reading() as state:
            page = state.list_conversations(ConversationQuery(after=after, limit=3))
        seen += [summary.conversation.id for summary in page]
        if len(page) < 3:
            break
        after = page[-1].position
    assert seen == ["c3", "c4", "c2", "c1"]


def test_a_conversations_events_are_read_newest_first(store: JournaledStore) -> None:
    seed(store)
    with store.transaction() as state:
        for n in range(3):
            state.record_event(
                event(f"more-{n}", conversation={"id": "c1"}), inbox_id=None, trace={}
            )
    with store.reading() as state:
        found = state.conversation_events("online-chat", "c1", limit=3)
        assert state.conversation_events("webhook", "c1") == []
    assert [record.event_id for record in found] == ["more-2", "more-1", "more-0"]


def test_the_jobs_of_many_events_are_read_together(store: JournaledStore) -> None:
    with store.transaction() as state:
        for n in range(3):
            jobs = [JobSpec("R", "slack", {"n": n, "k": k}, f"slack:C{k}") for k in range(n)]
            state.record_event(event(f"e{n}"), inbox_id=None, trace={}, jobs=jobs)
    with store.reading() as state:
        found = state.jobs_of_events(["e2", "e0", "e1", "unknown"])
        one_by_one = {e: state.jobs(event_id=e) for e in ("e0", "e1", "e2", "unknown")}
        assert state.jobs_of_events([]) == {}
    assert found == one_by_one
    assert [job.params["k"] for job in found["e2"]] == [0, 1]  # plan order
    assert found["e0"] == found["unknown"] == []


def test_reading_does_not_wait_for_a_writer(backend: Backend) -> None:
    if not backend.durable:
        return  # the memory store is one object: its reads are its transactions
    writer = reader = backend.open()  # one store: its own writer must not block its reads
    seed(writer)
    holding, done = threading.Event(), threading.Event()

    def write() -> None:
        with writer.transaction() as state:
            state.save_conversation("online-chat", "k9", Conversation(id="c9"))
            holding.set()
            assert done.wait(30)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert holding.wait(30)
        assert ids(reader) == ["c3", "c4", "c2", "c1"]  # the writer's row is not visible yet
    finally:
        done.set()
        thread.join(30)


def test_a_client_holding_nul_leaves_search_working(store: JournaledStore) -> None:
    """A client's notes holding NUL (a provider's "\\u0000") would make PostgreSQL refuse to
    read every client document in the search: it is stored as U+FFFD there."""
    seed(store)
    with store.transaction() as state:
        state.save_conversation("online-chat", "k5", Conversation(id="c5", tags=["a\x00"]))
        state.save_client("online-chat", Client(id="client-k5", name="Zoe\x00", notes="\x00"))
        state.record_event(
            event("e-c5", conversation={"id": "c5"}, client={"id": "client-k5"}),
            inbox_id=None,
            trace={},
            now=T0 + timedelta(minutes=9),
        )
    assert ids(store, text="lopez") == ["c1"]
    assert ids(store, text="zoe") == ["c5"]
    assert ids(store, tag="vip") == ["c3", "c1"]
