"""From Chatra webhooks to normalized events, through conversation state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from chatra_samples import CHANNEL, agent_directory, encode, make_provider, sample, sample_body
from rulekit.directory import AgentEntry, Directory
from rulekit.event import Conversation
from rulekit.store import MemoryStore

ANON = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"
TOM = "q8w7e6r5t4y3u2i1o9p8a7s6d5f4g3h2j1k9l8zx"


def names(events):
    return [e.event for e in events]


def test_an_anonymous_visitor_starting_a_chat_is_created(feed):
    (event,) = feed("chat_started_anonymous.json")
    assert event.id == "online-chat:msg:Acb7t59BkCvoXi6SS"
    assert (event.channel, event.event, event.origin, event.recovered) == (
        CHANNEL,
        "created",
        "channel",
        False,
    )
    assert event.occurred_at == datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)
    assert event.conversation == Conversation(
        id=f"online-chat:{ANON}",
        external_id="Kw2twCpXPKBFtP87S",
        status="open",
        group="support",
        page="https://shop.example.com/products/blue-kettle",
        link="https://app.chatra.io/chat/Kw2twCpXPKBFtP87S",
    )
    client = event.client
    assert client.id == ANON
    assert client.name is None and client.email is None
    assert client.display_name == "Visitor 4p40"
    assert (client.language, client.browser_language) == ("en", "de")
    assert client.last_visit == datetime(2025, 3, 14, 9, 8, 5, tzinfo=UTC)
    assert event.message.author == "client"
    assert event.message.text == "Hi, is the blue kettle in stock?"
    assert event.message.created_at == event.occurred_at
    assert event.agent.id is None and event.agent.known is False
    assert event.raw == sample("chat_started_anonymous.json")


def test_the_country_name_gives_its_iso_code(feed):
    (event,) = feed("chat_started_anonymous.json")
    assert (event.client.country, event.client.country_code) == ("Germany", "DE")


def test_a_chat_goes_on_with_messages_and_agent_replies_and_drops_our_echoes(feed):
    events = feed(
        "chat_started_anonymous.json",
        "chat_fragment_client_message.json",
        "chat_fragment_agent_reply_from_app.json",
        "chat_fragment_api_echo.json",
    )
    assert names(events) == ["created", "message", "agent_replied", "message"]
    message, reply, after_echo = events[1:]
    assert message.message.text == "Also, do you ship to Austria?"  # read from "message"
    assert reply.message.author == "agent"
    assert after_echo.message.id == "AnafCJdiXFetrpEqM"  # the echo before it yielded nothing
    assert {e.conversation.id for e in events} == {f"online-chat:{ANON}"}
    assert all(e.conversation.status == "open" for e in events)


def test_redeliveries_yield_nothing_new(feed):
    bodies = [
        "chat_started_anonymous.json",
        "chat_fragment_client_message.json",
        "chat_fragment_agent_reply_from_app.json",
        "chat_fragment_api_echo.json",
    ]
    assert len(feed(*bodies)) == 4
    assert feed(*bodies, *reversed(bodies)) == []


def test_agents_are_matched_to_the_directory_case_insensitively(feed):
    events = feed("chat_started_anonymous.json", "chat_fragment_agent_reply_from_app.json")
    reply = events[-1]
    assert reply.event == "agent_replied"
    assert reply.agent.model_dump() == {
        "id": "k93sKHGAs8ose7hX4",
        "email": "Anna@Shop.Example.com",  # the directory's spelling
        "name": "Anna W.",
        "known": True,
    }
    assert reply.message.agent == "Anna@Shop.Example.com"


def test_of_several_agents_with_one_id_the_last_wrote_and_a_lone_agent_wrote_without_one(feed):
    body = {
        "eventName": "chatFragment",
        "client": {"id": "c1"},
        "agents": [
            {"id": "a1", "name": "First", "email": "first@example.com"},
            {"id": "a1", "name": "Second", "email": "second@example.com"},
            {"id": "a2", "name": "Other"},
        ],
        "messages": [
            {"id": "m1", "type": "agent", "agentId": "a1", "text": "hi"},
            {"id": "m2", "type": "agent", "agentId": "zz", "agentName": "Z", "text": "hi"},
            {"id": "m3", "type": "agent", "text": "hi"},
        ],
    }
    first, unknown, anonymous = feed(body)
    assert (first.agent.email, first.agent.name) == ("second@example.com", "Second")
    assert (unknown.agent.id, unknown.agent.email, unknown.agent.name) == ("zz", None, "Z")
    assert anonymous.agent.id is None  # several agents in the chat: none of them wrote it
    lone = {**body, "client": {"id": "c2"}, "agents": body["agents"][2:]}
    lone["messages"] = [{**message, "id": message["id"] + "-2"} for message in body["messages"]]
    assert [event.agent.name for event in feed(lone)] == [None, "Z", "Other"]


CAPPED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
sys.path.insert(0, sys.argv[1])
from chatra_samples import make_provider
from rulekit.store import MemoryStore

body = {
    "eventName": "chatFragment",
    "client": {"id": "c1"},
    "agents": [{"id": "x", "name": "X"}] + [{}] * 200_000,
    "messages": [
        {"id": f"m{i}", "type": "agent", "agentId": "x", "text": "a"} for i in range(20_000)
    ],
}
raw = json.dumps(body, separators=(",", ":")).encode()
assert len(raw) < 4 * 1024 * 1024  # within the daemon's default max_body_bytes
store = MemoryStore()
with store.transaction() as state:
    events = make_provider().parse(raw, state)
assert len(events) == 20_000 and events[-1].agent.name == "X"
"""


def test_a_body_of_many_agents_and_many_messages_is_read_at_once():
    """Each agent message looked its author up by reading the body's whole ``agents`` list:
    a body of 200,000 agents and 20,000 messages (1.7 MB) held the daemon for minutes. The
    process is limited to 20 s of CPU: killed unless the body is read in about a second."""
    import subprocess
    import sys
    from pathlib import Path

    tests = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", CAPPED, tests], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_agent_starting_a_chat_creates_it_and_an_unknown_agent_is_not_known(feed):
    (event,) = feed("chat_started_bound_user_agent_initiated.json")
    assert event.event == "created"
    assert event.message.author == "agent"
    assert event.agent.model_dump() == {
        "id": "37FGci3fEqmpeWGYh",
        "email": "pavel@shop.example.com",
        "name": "Pavel Novak",
        "known": False,
    }
    assert event.message.agent == "pavel@shop.example.com"
    client = event.client
    assert (client.id, client.name, client.email, client.phone) == (
        "user-48213",
        "Jonas Schmidt",
        "jonas.schmidt@example.net",
        "+49 30 1234567",
    )
    assert client.custom == {"Plan": "Pro", "userId": "48213"}


def test_a_first_fragment_from_a_never_seen_visitor_is_created_with_its_data(feed):
    (event,) = feed("chat_fragment_prechat_form.json")
    assert event.event == "created"
    assert (event.client.name, event.client.email, event.client.phone) == (
        "Olivia Brown",
        "olivia.brown@example.com",
        "+44 20 7946 0958",
    )


def test_contact_data_becoming_known_is_client_updated_before_the_message(feed, store):
    feed("chat_started_anonymous.json")
    fragment = sample("chat_fragment_prechat_form.json")
    fragment["client"]["id"] = ANON
    events = feed(fragment)
    assert names(events) == ["client_updated", "message"]
    updated, message = events
    assert updated.id.startswith(f"online-chat:client:{ANON}:")
    assert updated.client.name == "Olivia Brown"
    assert message.client.email == "olivia.brown@example.com"
    assert updated.message.id is None
    assert updated.occurred_at == message.occurred_at
    with store.transaction() as state:
        stored = state.get_client(CHANNEL, ANON)
    assert stored is not None and stored.phone == "+44 20 7946 0958"
    assert stored.ip == "192.0.2.77"


def test_a_changed_email_is_client_updated_and_other_changes_are_not(feed):
    feed("chat_fragment_prechat_form.json")
    fragment = sample("chat_fragment_prechat_form.json")
    fragment["messages"][0]["id"] = "second"
    fragment["client"]["ip"] = "192.0.2.78"
    assert names(feed(fragment)) == ["message"]
    fragment["messages"][0]["id"] = "third"
    fragment["client"]["info"]["email"] = "olivia@example.com"
    assert names(feed(fragment)) == ["client_updated", "message"]


def test_an_email_changed_back_and_forth_is_an_event_each_time_with_its_own_id(feed):
    """The daemon records an event id once (a repeat is a redelivery): a change back to an
    email the client had before got the id of the first change to it, and was dropped."""
    feed("chat_fragment_prechat_form.json")
    fragment = sample("chat_fragment_prechat_form.json")
    updated = []
    for n, email in enumerate(["olivia@example.com", "olivia.brown@example.com"] * 2):
        fragment["messages"][0]["id"] = f"message {n}"
        fragment["client"]["info"]["email"] = email
        events = feed(fragment)
        assert names(events) == ["client_updated", "message"]
        updated.append(events[0])
    assert [e.client.email for e in updated] == [
        "olivia@example.com",
        "olivia.brown@example.com",
    ] * 2
    assert len({e.id for e in updated}) == 4


def test_data_a_payload_leaves_out_is_kept(feed):
    feed("chat_started_anonymous.json")
    (reply,) = feed("chat_fragment_agent_reply_from_app.json")
    assert reply.client.last_visit == datetime(2025, 3, 14, 9, 8, 5, tzinfo=UTC)
    assert reply.client.browser_language == "de"
    assert reply.conversation.page == "https://shop.example.com/products/blue-kettle"


def test_a_transcript_does_not_refire_seen_messages_and_recovers_lost_ones(feed):
    started = sample("chat_transcript_with_email.json")
    started["eventName"] = "chatStarted"
    started["message"] = started.pop("messages")[0]
    # The agent's reply reached us, the visitor's "¡Gracias!" fragment was lost.
    reply = sample("chat_transcript_with_email.json")
    reply["eventName"] = "chatFragment"
    reply["messages"] = reply["messages"][1:2]
    assert names(feed(started, reply)) == ["created", "agent_replied"]

    events = feed("chat_transcript_with_email.json")
    assert names(events) == ["message", "closed"]
    recovered, closed = events
    assert (recovered.message.text, recovered.recovered) == ("¡Gracias!", True)
    assert recovered.conversation.status == "open"
    assert closed.id == "online-chat:closed:8QzQiJw4rZe9S7fLy:2QwErTyUiPaSdFgHj"
    assert closed.conversation.status == "closed"
    assert closed.recovered is False
    assert closed.message.id is None
    assert closed.occurred_at == datetime(2025, 3, 14, 11, 2, 10, tzinfo=UTC)

    assert feed("chat_transcript_with_email.json") == []


def test_a_transcript_of_a_chat_never_seen_recovers_all_of_it(feed, store):
    events = feed("chat_transcript_with_email.json")
    assert names(events) == ["created", "agent_replied", "message", "closed"]
    assert [e.recovered for e in events] == [True, True, True, False]
    with store.transaction() as state:
        conversation = state.get_conversation(CHANNEL, "1lr3pe29gd8afpk054nzdkyayq3s195jmsnd8dud")
    assert conversation is not None and conversation.status == "closed"


def test_a_returning_visitor_reopens_the_conversation(feed, store):
    first = feed("chat_reopened_1_transcript.json")
    assert names(first) == ["created", "agent_replied", "closed"]
    (reopened,) = feed("chat_reopened_2_started.json")
    assert reopened.event == "reopened"
    assert reopened.conversation.id == first[0].conversation.id == f"online-chat:{TOM}"
    assert reopened.conversation.status == "open"
    assert reopened.conversation.page == "https://shop.example.com/account/orders"
    assert reopened.client.last_visit == datetime(2025, 3, 17, 7, 55, tzinfo=UTC)
    with store.transaction() as state:
        stored = state.get_conversation(CHANNEL, TOM)
    assert stored is not None and stored.status == "open"


def test_a_client_fragment_after_closed_is_reopened_too(feed):
    feed("chat_reopened_1_transcript.json")
    fragment = sample("chat_fragment_client_message.json")
    fragment["client"]["id"] = TOM
    assert names(feed(fragment)) == ["reopened"]
    fragment["messages"][0]["id"] = "next"
    assert names(feed(fragment)) == ["message"]


def test_an_agent_writing_into_a_closed_conversation_opens_it(feed):
    feed("chat_reopened_1_transcript.json")
    reply = sample("chat_fragment_agent_reply_from_app.json")
    reply["client"]["id"] = TOM
    (event,) = feed(reply)
    assert (event.event, event.conversation.status) == ("agent_replied", "open")
    fragment = sample("chat_fragment_client_message.json")
    fragment["client"]["id"] = TOM
    assert names(feed(fragment)) == ["message"]


def test_a_second_transcript_closes_the_reopened_conversation(feed):
    feed("chat_reopened_1_transcript.json", "chat_reopened_2_started.json")
    transcript = sample("chat_reopened_1_transcript.json")
    transcript["messages"].append(sample("chat_reopened_2_started.json")["message"])
    (closed,) = feed(transcript)
    assert closed.id == "online-chat:closed:KZkyRCRQFnKpom6ik:Rt3Yu4Wq5Ep6As7Df"
    # A late redelivery of the first transcript does not close it again.
    assert feed("chat_reopened_1_transcript.json") == []


def test_several_messages_in_a_fragment_yield_one_event_each_in_order(feed):
    feed("chat_started_anonymous.json")
    fragment = sample("chat_fragment_client_message.json")
    first = fragment["messages"][0]
    fragment["messages"] = [
        {**first, "id": f"m{i}", "message": f"part {i}", "createdAt": first["createdAt"] + i}
        for i in range(3)
    ]
    events = feed(fragment)
    assert [(e.event, e.message.text) for e in events] == [
        ("message", "part 0"),
        ("message", "part 1"),
        ("message", "part 2"),
    ]


def test_system_messages_yield_no_event(feed):
    fragment = sample("chat_fragment_client_message.json")
    fragment["messages"].insert(0, {"id": "sys1", "type": "system", "text": "Chat assigned"})
    assert names(feed(fragment)) == ["created"]


def test_the_echo_tag_is_a_setting(store):
    provider = make_provider(received_from="helpdesk")
    with store.transaction() as state:
        events = provider.parse(sample_body("chat_fragment_api_echo.json"), state)
    assert names(events) == ["created", "message"]  # "rulekit" is not our tag here
    assert events[0].message.author == "agent"


def test_only_the_configured_client_data_is_pulled(store):
    provider = make_provider(client_data=["email", "city"])
    with store.transaction() as state:
        body = sample_body("chat_started_bound_user_agent_initiated.json")
        (event,) = provider.parse(body, state)
    client = event.client
    assert (client.id, client.display_name) == ("user-48213", "Jonas Schmidt")  # always
    assert (client.email, client.city) == ("jonas.schmidt@example.net", "Hamburg")
    assert client.model_dump(exclude={"id", "display_name", "email", "city"}) == {
        **{f: None for f in client.model_dump(exclude={"id", "display_name", "email", "city"})},
        "custom": {},
    }


def test_last_visit_may_be_an_iso_string(feed):
    started = sample("chat_started_anonymous.json")
    started["client"]["lastVisit"]["startedAt"] = "2025-03-14T09:08:05.000Z"
    (event,) = feed(started)
    assert event.client.last_visit == datetime(2025, 3, 14, 9, 8, 5, tzinfo=UTC)


def test_a_message_without_a_time_happened_when_it_arrived(feed):
    started = sample("chat_started_anonymous.json")
    del started["message"]["createdAt"]
    before = datetime.now(UTC)
    (event,) = feed(started)
    assert before <= event.occurred_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert event.message.created_at is None


def test_an_assignee_set_by_rulekit_is_kept(feed, store):
    feed("chat_started_anonymous.json")
    with store.transaction() as state:
        conversation = state.get_conversation(CHANNEL, ANON)
        assert conversation is not None
        conversation.assignee = "anna@shop.example.com"
        state.save_conversation(CHANNEL, ANON, conversation)
    (event,) = feed("chat_fragment_client_message.json")
    assert event.conversation.assignee == "anna@shop.example.com"


def test_without_a_default_group_new_conversations_have_none(store):
    provider = make_provider(default_group=None)
    with store.transaction() as state:
        (event,) = provider.parse(sample_body("chat_started_anonymous.json"), state)
    assert event.conversation.group is None


def test_event_ids_are_stable_across_stores():
    bodies = ["chat_started_anonymous.json", "chat_transcript_with_email.json"]
    runs = []
    for _ in range(2):
        provider, store = make_provider(), MemoryStore()
        with store.transaction() as state:
            runs.append([e.id for b in bodies for e in provider.parse(sample_body(b), state)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == len(runs[0])


def test_events_carry_the_whole_payload_for_auditing_but_not_in_public(feed):
    (event,) = feed("chat_started_anonymous.json")
    assert "raw" not in event.public()
    assert encode(event.raw) == encode(sample("chat_started_anonymous.json"))


def test_a_message_holding_a_file_says_so_whatever_its_text(feed):
    # a visitor's screenshot has no text: rules tell it from an empty message by its kind
    fragment = sample("chat_fragment_client_message.json")
    image = {"name": "order.png", "size": 48213, "isImage": True, "url": "https://x.example/1"}
    pdf = {"name": "invoice.pdf", "size": 90211, "isImage": False, "url": "https://x.example/2"}
    fragment["messages"] = [
        {"id": "fileMsg1", "type": "client", "file": image},
        {"id": "fileMsg2", "type": "client", "text": "the invoice", "file": pdf},
        {"id": "fileMsg3", "type": "client", "text": "and a word", "file": "not a file"},
        {"id": "fileMsg4", "type": "client", "file": {}},
    ]
    events = feed(fragment)
    assert [(e.message.kind, e.message.text) for e in events] == [
        ("photo", None),
        ("document", "the invoice"),
        ("text", "and a word"),
        (None, None),
    ]


def test_a_message_timed_in_epoch_seconds_happened_then_not_in_1970(feed):
    # read as milliseconds, 1741943525 is 21 January 1970: every `after:` timer and cooldown
    # counted from the message would be long past
    fragment = sample("chat_fragment_client_message.json")
    fragment["messages"][0]["createdAt"] = 1741943525
    (event,) = feed(fragment)
    assert event.occurred_at == event.message.created_at
    assert event.occurred_at == datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)


def test_an_agent_answering_a_chat_nobody_is_assigned_to_in_chatra_takes_it(feed):
    """Someone taking the chat in Chatra's own app: a rule's assign of an earlier event then
    leaves it with them (``assigned_by: channel``)."""
    (started,) = feed("chat_started_anonymous.json")
    assert (started.conversation.assignee, started.conversation.assigned_by) == (None, None)
    (reply,) = feed("chat_fragment_agent_reply_from_app.json")
    taken = reply.conversation
    assert (taken.assignee, taken.assigned_by) == ("Anna@Shop.Example.com", "channel")
    assert taken.assigned_at == reply.occurred_at  # the message's time: the same when read again
    (later,) = feed("chat_fragment_client_message.json")
    assert later.conversation.assigned_by == "channel"


def test_an_agents_answer_in_chatra_leaves_an_assigned_chat_with_its_assignee(feed, store):
    feed("chat_started_anonymous.json")
    with store.transaction() as state:
        conversation = state.get_conversation(CHANNEL, ANON)
        assert conversation is not None
        conversation.assignee, conversation.assigned_by = "eve@shop.example.com", "rule"
        state.save_conversation(CHANNEL, ANON, conversation)
    (reply,) = feed("chat_fragment_agent_reply_from_app.json")
    assert (reply.conversation.assignee, reply.conversation.assigned_by) == (
        "eve@shop.example.com",
        "rule",
    )


def test_an_agent_outside_the_directory_or_the_channel_takes_no_chat():
    without_access = AgentEntry(email="anna@shop.example.com", groups=["support"], channels=[])
    for directory in (Directory([], ["support"]), Directory([without_access], ["support"])):
        provider, store = make_provider(directory), MemoryStore()
        for name in ("chat_started_anonymous.json", "chat_fragment_agent_reply_from_app.json"):
            with store.transaction() as state:
                events = provider.parse(sample_body(name), state)
        assert (events[-1].event, events[-1].conversation.assignee) == ("agent_replied", None)


def test_a_take_in_chatra_in_the_same_body_as_the_chats_start_comes_after_it(store):
    """A body whose client message starts the chat and whose agent message takes it: a rule's
    assign of the start (``created``) leaves the chat with the agent, as when the two came in
    two bodies."""
    from rulekit.actions.assign import Assign, AssignParams
    from rulekit.config import Config
    from rulekit.runtime.replies import note_replies

    started = json.loads(sample_body("chat_started_anonymous.json"))
    reply = json.loads(sample_body("chat_fragment_agent_reply_from_app.json"))
    body = {**reply, "messages": [started["message"], *reply["messages"]]}
    provider = make_provider()
    with store.transaction() as state:
        events = provider.parse(encode(body), state)
        for event in events:
            note_replies(state, event)
    created, replied = events
    assert (created.event, created.conversation.assigned_by) == ("created", None)
    assert replied.conversation.assigned_by == "channel"
    config = Config()
    config.directory = agent_directory()
    with store.transaction() as state:
        change = Assign().rule_change(AssignParams(group="support"), created, state, config)
    assert change.result["kept"] is True and change.emitted == []
