"""Properties over generated input: the parser never crashes, and no client message is lost or
counted twice, whatever the delivery order."""

from __future__ import annotations

import itertools
import json
import operator
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from chatra_samples import DATA, encode, make_provider, sample, sample_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from rulekit.errors import ChannelError
from rulekit.event import Client
from rulekit.store import MemoryStore

from rulekit_chatra.payload import (
    CONTACT_KEYS,
    ChatraClient,
    _contact,
    _identifier,
    _string,
    parse_body,
    read_payload,
    timestamp,
)
from rulekit_chatra.settings import CLIENT_FIELDS

SAMPLES = sorted(p.name for p in DATA.glob("*.json"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

# Keys Chatra uses, so that generated objects reach past the first checks.
chatra_keys = st.sampled_from(
    [
        "client", "id", "chatId", "message", "messages", "agent", "agents", "type",
        "text", "createdAt", "agentId", "receivedFrom", "info", "basicInfo", "integrationData",
        "name", "email", "phone", "lastVisit", "startedAt", "chatStartedPage", "link",
    ]
)  # fmt: skip


def _containers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every object and list in a JSON document."""
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return []
    return [path] + [p for key, value in items for p in _containers(value, (*path, key))]


@st.composite
def mutated_samples(draw) -> Any:
    """A sample payload with a few values, anywhere in it, replaced by arbitrary JSON or removed
    (its eventName is left alone: that check is covered elsewhere, and it would hide the rest)."""
    payload = sample(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        node = payload
        for key in draw(st.sampled_from(_containers(payload))):
            node = node[key]
        if isinstance(node, dict):
            keys = [k for k in node if k != "eventName"]
            key = draw(st.sampled_from(keys) | chatra_keys if keys else chatra_keys)
            if draw(st.integers(0, 4)) == 0:
                node.pop(key, None)
            else:
                node[key] = draw(json_values)
        elif node:
            node[draw(st.integers(0, len(node) - 1))] = draw(json_values)
    return payload


def parse_or_reject(body: bytes) -> None:
    """Parse into a fresh store: events, or a ChannelError that leaves the state untouched."""
    provider, store = make_provider(), MemoryStore()
    with store.transaction() as state:
        try:
            events = provider.parse(body, state)
        except ChannelError as exc:
            assert str(exc) and "\n" not in str(exc)
            for table in ("conversations", "clients", "seen_messages"):
                (rows,) = state.execute(f"SELECT count(*) FROM {table}").fetchone()
                assert rows == 0, table
            return
    for event in events:
        assert event.channel == "online-chat"
        assert event.occurred_at.tzinfo is not None
        json.dumps(event.public())  # the events are plain data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(encode))
def test_any_body_gives_events_or_a_channel_error(body):
    parse_or_reject(body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_samples())
def test_any_damaged_sample_gives_events_or_a_channel_error(payload):
    parse_or_reject(encode(payload))


def as_utf8(payload: Any) -> bytes:
    """JSON with its text as UTF-8 (lone surrogates written as they are: not UTF-8)."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")


def read_as_json_loads_does(body: bytes) -> Any:
    """What the body read as before bodies were decoded by msgspec: ``json.loads``, then the
    tolerant reading (a payload, or the message of the ChannelError)."""
    try:
        data = json.loads(body)
    except RecursionError:
        return "the body is not acceptable JSON: nested too deeply"
    except (ValueError, TypeError) as exc:
        return f"the body is not valid JSON: {exc}"
    try:
        return read_payload(data)
    except ChannelError as exc:
        return str(exc)


def read_now(body: bytes) -> Any:
    try:
        return parse_body(body)
    except ChannelError as exc:
        return str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutated_samples().map(encode)  # non-ASCII written as \u escapes
    | mutated_samples().map(as_utf8)
    | json_values.map(encode)
    | json_values.map(as_utf8)
    | st.binary(max_size=200)
)
def test_decoding_reads_every_body_as_json_loads_does(body):
    # compared as text: a NaN in the raw payload is unequal to itself
    assert repr(read_now(body)) == repr(read_as_json_loads_does(body))


# -- delivery order ------------------------------------------------------------------------------

CLIENT = {"id": "visitor-1", "chatId": "chat-1", "displayedName": "Visitor 0001"}


@st.composite
def deliveries(draw) -> tuple[list[dict[str, Any]], list[tuple[str, bytes]]]:
    """One chat: its messages, and its webhooks (a chatStarted, fragments, a transcript) in a
    random order, some lost and some delivered twice. The transcript always arrives."""
    kinds = draw(st.lists(st.sampled_from(["client", "agent", "echo"]), min_size=1, max_size=8))
    messages = []
    for index, kind in enumerate(kinds):
        message: dict[str, Any] = {
            "id": f"m{index}",
            "type": "client" if kind == "client" else "agent",
            "text": f"text {index}",
            "createdAt": 1741943525000 + index * 1000,
        }
        if kind != "client":
            message["agentId"] = "k93sKHGAs8ose7hX4"
        if kind == "echo":
            message["receivedFrom"] = "rulekit"
        messages.append(message)

    cuts = sorted(draw(st.sets(st.integers(2, len(messages) - 1)))) if len(messages) > 2 else []
    bounds = [1, *cuts, len(messages)]
    bodies = [("chatStarted", {"eventName": "chatStarted", "message": messages[0]})]
    for start, end in itertools.pairwise(bounds):
        if start < end:
            fragment = {"eventName": "chatFragment", "messages": messages[start:end]}
            bodies.append(("chatFragment", fragment))
    bodies.append(("chatTranscript", {"eventName": "chatTranscript", "messages": messages}))

    sent = []
    for name, payload in bodies:
        low = 1 if name == "chatTranscript" else 0
        copies = draw(st.integers(low, 2))
        sent.extend([(name, encode({**payload, "client": CLIENT}))] * copies)
    return messages, draw(st.permutations(sent))


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_every_message_yields_exactly_one_event_whatever_the_delivery_order(chat):
    messages, sent = chat
    provider, store = make_provider(), MemoryStore()
    events, first_seen_in = [], {}
    for name, body in sent:
        for message in json.loads(body).get("messages") or [json.loads(body).get("message")]:
            first_seen_in.setdefault(message["id"], name)
        with store.transaction() as state:
            events.extend(provider.parse(body, state))

    per_message = Counter(e.message.id for e in events if e.message.id)
    for message in messages:
        echo = "receivedFrom" in message
        assert per_message[message["id"]] == (0 if echo else 1), message
    for event in events:
        if event.message.id:
            recovered = first_seen_in[event.message.id] == "chatTranscript"
            assert event.recovered is recovered
            expected = {"client": {"created", "message"}, "agent": {"created", "agent_replied"}}
            assert event.event in expected[event.message.author]

    names = [e.event for e in events]
    assert names.count("closed") == 1 and names[-1] == "closed"
    assert names.count("created") == (0 if all("receivedFrom" in m for m in messages) else 1)
    assert "reopened" not in names and "client_updated" not in names
    assert len({e.id for e in events}) == len(events)


# -- client records ------------------------------------------------------------------------------

VALUES = st.none() | st.sampled_from(["Anna", "anna@example.com", "Germany", "Spain", "x"])
TIMES = st.none() | st.sampled_from(
    [datetime(2025, 3, 14, tzinfo=UTC), datetime(2025, 3, 15, tzinfo=UTC)]
)


def values_of(names: tuple[str, ...]) -> Any:
    return st.fixed_dictionaries(
        {name: TIMES if name == "last_visit" else VALUES for name in names if name != "custom"}
    )


def full_record(normalizer: Any, data: ChatraClient, known: Client | None) -> Client:
    """The client record as :meth:`rulekit_chatra.clients.ClientRecords.record` defines it,
    built field by field."""
    values: dict[str, Any] = dict.fromkeys(Client.model_fields)
    values["custom"] = {}
    values["id"] = data.id
    values["display_name"] = data.display_name or (known.display_name if known else None)
    for name in normalizer.settings.client_data:
        value = getattr(data, name)
        if name == "custom":
            value = {**known.custom, **value} if known is not None else value
        elif value is None and known is not None:
            value = getattr(known, name)
        values[name] = value
    return Client(**values)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(st.sampled_from(CLIENT_FIELDS), unique=True),
    sent=values_of(CLIENT_FIELDS),
    known_values=values_of((*CLIENT_FIELDS, "country_code")),
    sent_custom=st.dictionaries(st.sampled_from("ab"), VALUES, max_size=2),
    known_custom=st.dictionaries(st.sampled_from("ab"), VALUES, max_size=2),
    display=st.tuples(VALUES, VALUES),
    known_at_all=st.booleans(),
)
def test_a_client_record_is_the_full_build_and_known_itself_when_unchanged(
    fields, sent, known_values, sent_custom, known_custom, display, known_at_all
):
    normalizer = make_provider(client_data=fields).normalizer
    data = ChatraClient(id="v1", display_name=display[0], custom=sent_custom, **sent)
    known = None
    if known_at_all:
        known = Client(id="v1", display_name=display[1], custom=known_custom, **known_values)
    record = normalizer.clients.record(data, known)
    expected = full_record(normalizer, data, known)
    assert record == expected
    assert (record is known) == (known is not None and known == expected)
    # the same data again (the next webhook of the chat): nothing changed
    assert normalizer.clients.record(data, record) is record
    # a country code not derived from the country is derived again
    stale = record.model_copy(update={"country_code": "ZZ"})
    assert normalizer.clients.record(data, stale) == record


def validated(model: BaseModel) -> BaseModel:
    """The model validation makes from ``model``'s set fields, its sub-models validated too."""
    values = {name: getattr(model, name) for name in model.model_fields_set}
    return type(model)(
        **{
            name: validated(value) if isinstance(value, BaseModel) else value
            for name, value in values.items()
        }
    )


def assert_built_as_validated(model: BaseModel) -> None:
    again = validated(model)
    assert model == again
    assert model.model_fields_set == again.model_fields_set
    assert model.model_dump_json() == again.model_dump_json()
    for name in type(model).model_fields:
        part = getattr(model, name)
        if isinstance(part, BaseModel):
            assert_built_as_validated(part)


def test_the_samples_events_are_the_validated_ones():
    """The parser builds its events without validation (``trusted_whole``): each event, and
    each of its parts, is what validation makes of the same values."""
    provider, store = make_provider(), MemoryStore()
    webhooks = [name for name in SAMPLES if not name.startswith("malformed")]
    names = [*webhooks, *webhooks]  # new conversations, then known ones
    with store.transaction() as state:
        events = [event for name in names for event in provider.parse(sample_body(name), state)]
    assert {event.event for event in events} >= {"created", "message", "agent_replied", "closed"}
    for event in events:
        assert_built_as_validated(event)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_samples(), min_size=1, max_size=4))
def test_any_events_are_the_validated_ones(payloads):
    provider, store = make_provider(), MemoryStore()
    for payload in payloads:
        try:
            with store.transaction() as state:
                events = provider.parse(encode(payload), state)
        except ChannelError:
            continue
        for event in events:
            assert_built_as_validated(event)


# -- the usual paths, written out -----------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(
    fields=st.permutations(CLIENT_FIELDS),
    known_values=values_of(CLIENT_FIELDS),  # (its country code derived, as usual)
    known_custom=st.dictionaries(st.sampled_from("ab"), VALUES, max_size=2),
    known_display=VALUES,
    known_at_all=st.booleans(),
    changed=st.sampled_from([None, "display_name", "custom", *CLIENT_FIELDS]),
    draw=st.data(),
)
def test_with_every_field_taken_a_client_record_is_the_one_of_the_general_path(
    fields, known_values, known_custom, known_display, known_at_all, changed, draw
):
    """With every client field taken (the default), records are built and compared written out:
    the same records, as validation makes them, as the path for any ``client_data``."""
    normalizer = make_provider(client_data=fields).normalizer
    general = make_provider(client_data=fields).normalizer
    general.clients.__dict__["_takes_every_field"] = False  # (its cached answer, overridden)
    # what is sent: each field what is known or nothing, but for the one ``changed`` (if any)
    sent: dict[str, Any] = {
        "display_name": known_display,
        "custom": known_custom,
        **known_values,
    }
    for name in sent:
        if name == changed:
            strategy = values_of((name,)).map(operator.itemgetter(name))
            if name == "custom":
                strategy = st.dictionaries(st.sampled_from("ab"), VALUES, max_size=2)
            elif name == "display_name":
                strategy = VALUES
            sent[name] = draw.draw(strategy)
        elif draw.draw(st.booleans()):
            sent[name] = {} if name == "custom" else None
    data = ChatraClient(id="v1", **sent)
    known = None
    if known_at_all:
        known = Client(id="v1", display_name=known_display, custom=known_custom, **known_values)
    record = normalizer.clients.record(data, known)
    expected = general.clients.record(data, known)
    assert record == expected == full_record(normalizer, data, known)
    assert record.model_fields_set == expected.model_fields_set
    assert_built_as_validated(record)
    assert (record is known) == (expected is known)
    assert normalizer.clients.record(data, record) is record
    if known is not None:
        assert normalizer.clients._unchanged(data, known) == general.clients._unchanged(data, known)
    stale = record.model_copy(update={"country_code": "ZZ"})
    assert normalizer.clients.record(data, stale) == record


ODD_TEXTS = st.sampled_from(
    ["x", " x ", "", " ", "\x00", "a\x00b", "é", "\ud800", "x" * 200, "x" * 201, " " + "x" * 200]
)
TEXT_KEYS = [
    *("chatLink", "displayedName", "ip", "browser", "os"),
    *("chatLanguage", "browserLanguage", "country", "city"),
]
ODD_VALUES = ODD_TEXTS | st.none() | st.booleans() | st.integers() | st.floats() | json_values


@settings(max_examples=500, deadline=None)
@given(
    client_id=ODD_VALUES,
    chat_id=ODD_VALUES,
    texts=st.dictionaries(st.sampled_from(TEXT_KEYS), ODD_VALUES),
    contact=st.dictionaries(st.sampled_from(["name", "email", "phone", "notes", "x"]), ODD_VALUES),
    message_id=ODD_VALUES,
    created_at=ODD_VALUES | st.integers(-(10**20), 10**20),
    agent=st.dictionaries(st.sampled_from(["id", "name", "email"]), ODD_VALUES),
    by=st.dictionaries(st.sampled_from(["agentId", "agentName", "receivedFrom"]), ODD_VALUES),
)
def test_the_written_out_reading_reads_as_its_helpers(
    client_id, chat_id, texts, contact, message_id, created_at, agent, by
):
    """The reading writes out ``_identifier``, ``_string``, ``timestamp`` and ``_contact`` for
    the usual values: whatever the values, it reads what they read."""
    client = {"id": client_id, "chatId": chat_id, "info": contact, **texts}
    message = {"id": message_id, "type": "client", "text": "hi", "createdAt": created_at, **by}
    data = {"eventName": "chatFragment", "client": client, "messages": [message], "agent": agent}
    if _identifier(client_id) is None:
        with pytest.raises(ChannelError):
            read_payload(data)
        return
    payload = read_payload(data)
    read = payload.client
    assert (read.id, read.chat_id) == (_identifier(client_id), _identifier(chat_id))
    keys = {
        "chat_link": "chatLink",
        "display_name": "displayedName",
        "ip": "ip",
        "browser": "browser",
        "os": "os",
        "language": "chatLanguage",
        "browser_language": "browserLanguage",
        "country": "country",
        "city": "city",
    }
    for name, key in keys.items():
        assert getattr(read, name) == _string(texts.get(key)), name
    sources = [contact] if contact else []
    expected_contact = _contact(sources) if sources else [None] * 4
    assert [read.name, read.email, read.phone, read.notes] == expected_contact
    assert read.custom == {k: v for k, v in contact.items() if k not in CONTACT_KEYS}
    (read_message,) = payload.messages
    assert read_message.created_at == timestamp(created_at)
    if _identifier(message_id) is not None:
        assert read_message.id == _identifier(message_id)
    else:
        assert read_message.id.startswith("content-")
    assert (read_message.agent_id, read_message.agent_name, read_message.received_from) == (
        _identifier(by.get("agentId")),
        _string(by.get("agentName")),
        _string(by.get("receivedFrom")),
    )
    (read_agent,) = payload.agents
    assert (read_agent.id, read_agent.name, read_agent.email) == (
        _identifier(agent.get("id")),
        _string(agent.get("name")),
        _string(agent.get("email")),
    )
