"""The one decision about webhook JSON (rulekit.channels.body) and the provider contract that
hands every provider (not only Chatra) the cleaned body."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rulekit.channels import ChannelContext, ChannelSettings, Provider
from rulekit.channels.body import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_KEY_CHARS,
    BodyError,
    bounded_key,
    bounded_time,
    for_providers,
    load,
)
from rulekit.channels.webhook import WebhookProvider
from rulekit.directory import Directory
from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.store.memory import MemoryStore


def test_lone_surrogates_become_replacement_characters_in_values_and_keys():
    body = b'{"k\\ud800": ["\\udfff", {"x": "a\\ud800b"}], "pair": "\\ud83d\\ude00"}'
    assert load(body) == {"k\ufffd": ["\ufffd", {"x": "a\ufffdb"}], "pair": "\U0001f600"}
    cleaned = for_providers(body)
    assert json.loads(cleaned) == load(body)
    cleaned.decode("utf-8")  # encodable text all through


def test_an_escaped_backslash_before_u_is_not_a_surrogate():
    body = b'{"path": "C:\\\\ud800"}'
    assert load(body) == {"path": "C:\\ud800"}
    assert json.loads(for_providers(body)) == {"path": "C:\\ud800"}


def test_a_clean_body_is_handed_on_unchanged_and_a_bom_is_dropped():
    body = b'{"a": "\xc3\xa9"}'
    assert for_providers(body) is body
    assert for_providers(b"\xef\xbb\xbf" + body) == '{"a":"é"}'.encode()


@pytest.mark.parametrize(
    "body",
    [b"[1e400]", b"[-1e400]", b"[NaN]", b'{"a":1,"a":1}', b"[" * 65 + b"]" * 65, b"1", b""],
)
def test_refused_bodies_raise_body_error_and_are_handed_on_untouched(body):
    with pytest.raises(BodyError):
        load(body)
    assert for_providers(body) is body


class Spy(Provider):
    """A third-party provider: records what it is handed."""

    name = "spy"

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        self.seen: list[bytes] = []

    def parse(self, body, state):
        self.seen.append(body)
        return []

    def conversation_key(self, data):
        if data.get("boom"):
            raise KeyError("a plugin bug")
        return data.get("key")


def spy() -> Spy:
    return Spy(ChannelContext("spy", ChannelSettings(), Directory([], [])))


def test_every_provider_is_handed_the_cleaned_body():
    provider = spy()
    with MemoryStore().transaction() as state:
        provider.parse(b'{"text": "\\ud800"}', state)
    assert json.loads(provider.seen[0]) == {"text": "\ufffd"}


def test_conversation_keys_are_clean_bounded_and_never_raise():
    provider = spy()
    # handed the body as ingest parsed it (lone surrogates replaced)
    assert provider.conversation_key(load(b'{"key": "v\\udfff"}')) == "v\ufffd"
    assert provider.conversation_key({"key": "v\udfff"}) == "v\ufffd"  # cleaned in any case
    long = provider.conversation_key({"key": "k" * 100_000})
    assert long.startswith("sha256:") and len(long) <= MAX_KEY_CHARS
    assert long == provider.conversation_key({"key": "k" * 100_000})
    assert provider.conversation_key({"boom": True}) is None
    assert provider.conversation_key({"key": 12}) is None


def test_the_built_in_webhook_provider_reads_surrogates_as_replacement_characters():
    provider = WebhookProvider(ChannelContext("web", ChannelSettings(), Directory([], [])))
    body = json.dumps(
        {"id": "e\ud800", "event": "message", "client": {"id": "c\udfff", "name": "\ud800"}}
    ).encode()
    with MemoryStore().transaction() as state:
        [event] = provider.parse(body, state)
    assert (event.id, event.client.id, event.client.name) == ("web:e\ufffd", "c\ufffd", "\ufffd")


@pytest.mark.parametrize("id_", ["a\x00b", "\x00", "x" * 10 + "\x00"])
def test_ids_with_nul_are_stored_with_a_replacement_character(id_):
    """PostgreSQL's text cannot hold NUL: an id holding one (ASCII and short, the usual shape)
    must not reach the store as it is, whichever provider read it."""
    provider = WebhookProvider(ChannelContext("web", ChannelSettings(), Directory([], [])))
    item = {
        "id": id_,
        "event": "message",
        "conversation": {"id": id_},
        "client": {"id": id_},
        "agent": {"id": id_},
        "message": {"id": id_, "text": "hi"},
    }
    with MemoryStore().transaction() as state:
        [event] = provider.parse(json.dumps(item).encode(), state)
    ids = [event.id, event.conversation.id, event.client.id, event.agent.id, event.message.id]
    expected = id_.replace("\x00", "\ufffd")
    assert ids == [f"web:{expected}"] * 2 + [expected] * 3  # (the channel's own event, chat)


ODD_IDS = ["ok", "x" * MAX_KEY_CHARS, "x" * (MAX_KEY_CHARS + 1), "a\x00b", "é", "\ud800", ""]


class Fixed(Provider):
    """A provider returning the events it is given, built by hand."""

    name = "fixed"

    def __init__(self, events: list[Event]) -> None:
        super().__init__(ChannelContext("fixed", ChannelSettings(), Directory([], [])))
        self.events = events

    def parse(self, body, state):
        return self.events


@pytest.mark.parametrize("shared", ODD_IDS)
@pytest.mark.parametrize("other", ODD_IDS)
def test_every_id_of_every_event_is_bounded_parts_shared_or_not(shared, other):
    """Events of one body share their conversation and client objects (checked once); a part
    that is not shared is checked for each event: every id ends as ``bounded_key`` makes it
    (an event's and a conversation's: what follows the channel's prefix, the prefix kept), the
    same for every event that shares a part, and an id made so is kept as it is."""
    conversation, client = Conversation(id=f"fixed:{shared}"), Client(id=shared)
    events = [
        Event(
            id=f"e{n}{other}",
            channel="fixed",
            event="message",
            conversation=conversation if n < 2 else Conversation(id=other),
            client=client if n != 1 else Client(id=other),
            message=Message(id=other),
            agent=Agent(id=other if n else shared),
        )
        for n in range(3)
    ]

    def own(key: str) -> str:
        rest = key.removeprefix("fixed:")
        return "fixed:" + (bounded_key(rest) or rest)

    expected = [
        [
            own(event.id),
            own(event.conversation.id),
            *(bounded_key(part.id) for part in (event.client, event.message, event.agent)),
        ]
        for event in events
    ]
    with MemoryStore().transaction() as state:
        parsed = Fixed(events).parse(b"{}", state)
    ids = [[e.id, e.conversation.id, e.client.id, e.message.id, e.agent.id] for e in parsed]
    assert ids == expected
    assert all(key.startswith("fixed:") for key, _ in zip(ids[0][:2], ids[1][:2], strict=True))
    if parsed[0].conversation.id == conversation.id:  # already the channel's own and fit: shared
        assert parsed[0].conversation is parsed[1].conversation is conversation
    with MemoryStore().transaction() as state:  # made so, kept as they are
        again = Fixed(parsed).parse(b"{}", state)
    assert [[e.id, e.conversation.id, e.client.id, e.message.id, e.agent.id] for e in again] == ids


TIMES = [
    None,
    datetime(2025, 1, 1, tzinfo=UTC),
    datetime(2025, 1, 1),  # naive: UTC
    datetime(2300, 1, 1, tzinfo=UTC),
    datetime(1960, 1, 1),
    datetime(2199, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # 2200-01-01T04:00Z
]


@pytest.mark.parametrize("written", TIMES)
@pytest.mark.parametrize("visit", TIMES)
@pytest.mark.parametrize("replied", [None, TIMES[1], TIMES[3]])
def test_every_time_of_every_event_is_bounded_the_usual_ones_left_as_they_are(
    written, visit, replied
):
    """The usual event (times aware and in range, the conversation's none) is checked in line;
    any other goes through the general check: each time ends as ``bounded_time`` makes it, in
    a copy of its part (the parts may be the state's)."""
    conversation = Conversation(id="fixed:c", last_agent_reply_at=replied)
    client, message = Client(id="k", last_visit=visit), Message(id="m", created_at=written)
    event = Event(
        id="fixed:e",
        channel="fixed",
        event="message",
        occurred_at=written or TIMES[1],
        conversation=conversation,
        client=client,
        message=message,
    )
    kept = (conversation.model_dump(), client.model_dump(), message.model_dump())
    with MemoryStore().transaction() as state:
        [parsed] = Fixed([event]).parse(b"{}", state)
    assert parsed.message.created_at == bounded_time(message.created_at)
    assert parsed.client.last_visit == bounded_time(client.last_visit)
    assert parsed.conversation.last_agent_reply_at == bounded_time(replied)
    assert (conversation.model_dump(), client.model_dump(), message.model_dump()) == kept
    for part, original in [
        (parsed.message, message),
        (parsed.client, client),
        (parsed.conversation, conversation),
    ]:
        assert (part is original) == (part.model_dump() == original.model_dump())
    if bounded_time(event.occurred_at) is None:
        assert EARLIEST_TIME <= parsed.occurred_at <= LATEST_TIME


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"\r\n\t", "\ufeff \u2028\u3000\x85".encode(), "\ufeff".encode()]
)
def test_a_body_of_nothing_but_whitespace_is_empty(body):
    with pytest.raises(BodyError, match="the body is empty"):
        load(body)


def test_bodies_read_one_after_another_keep_their_own_keys_and_checks():
    # the decoders are made once and shared: nothing of one body stays for the next
    assert load(b'{"a": {"b": 1}, "c": [1.5]}') == {"a": {"b": 1}, "c": [1.5]}
    with pytest.raises(BodyError, match="twice"):
        load(b'{"a": 1, "a": 2}')
    assert load(b'{"a\\ud800": 1}') == {"a\ufffd": 1}
    assert load(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BodyError, match="surrogate"):
        load(b'{"a\\ud800": 1}', refuse_surrogates=True)
