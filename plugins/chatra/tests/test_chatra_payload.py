"""Reading Chatra's webhook JSON: liberal where facts are uncertain, strict where it matters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from chatra_samples import encode, sample, sample_body
from rulekit.errors import ChannelError

from rulekit_chatra.payload import parse_body, read_payload, timestamp

VALID_SAMPLES = [
    "chat_started_anonymous.json",
    "chat_started_bound_user_agent_initiated.json",
    "chat_fragment_client_message.json",
    "chat_fragment_agent_reply_from_app.json",
    "chat_fragment_api_echo.json",
    "chat_fragment_prechat_form.json",
    "chat_transcript_with_email.json",
    "chat_reopened_1_transcript.json",
    "chat_reopened_2_started.json",
]


@pytest.mark.parametrize("name", VALID_SAMPLES)
def test_every_valid_sample_reads(name):
    payload = parse_body(sample_body(name))
    raw = sample(name)
    assert payload.event_name == raw["eventName"]
    assert payload.client.id == raw["client"]["id"]
    assert payload.raw == raw
    expected = raw.get("messages") or [raw["message"]]
    assert [m.id for m in payload.messages] == [m["id"] for m in expected]
    assert all(m.text for m in payload.messages)


def test_an_anonymous_visitor_has_a_display_name_but_no_name():
    payload = parse_body(sample_body("chat_started_anonymous.json"))
    client = payload.client
    assert client.name is None and client.email is None
    assert client.display_name == "Visitor 4p40"
    assert (client.ip, client.country, client.city) == ("203.0.113.54", "Germany", "Berlin")
    assert (client.browser, client.os) == ("Chrome 122", "Windows 10")
    assert (client.language, client.browser_language) == ("en", "de")
    assert client.last_visit == datetime(2025, 3, 14, 9, 8, 5, tzinfo=UTC)
    assert client.chat_id == "Kw2twCpXPKBFtP87S"
    assert client.chat_link == "https://app.chatra.io/chat/Kw2twCpXPKBFtP87S"
    assert client.custom == {}
    assert payload.page == "https://shop.example.com/products/blue-kettle"
    (message,) = payload.messages
    assert message.type == "client"
    assert message.created_at == datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)


def test_integration_data_gives_contact_and_custom_fields():
    payload = parse_body(sample_body("chat_started_bound_user_agent_initiated.json"))
    client = payload.client
    assert client.id == "user-48213"
    assert (client.name, client.email, client.phone) == (
        "Jonas Schmidt",
        "jonas.schmidt@example.net",
        "+49 30 1234567",
    )
    assert client.custom == {"Plan": "Pro", "userId": "48213"}
    assert [(a.id, a.email) for a in payload.agents] == [
        ("37FGci3fEqmpeWGYh", "pavel@shop.example.com")
    ]
    assert payload.messages[0].agent_id == "37FGci3fEqmpeWGYh"


def test_notes_and_phone_come_from_basic_info_when_info_lacks_them():
    raw = sample("chat_transcript_with_email.json")
    raw["client"]["info"] = {}
    raw["client"]["basicInfo"]["phone"] = "+34 600 000 000"
    client = read_payload(raw).client
    assert (client.name, client.notes, client.phone) == (
        "Maria Lopez",
        "VIP customer",
        "+34 600 000 000",
    )


def test_message_text_may_be_under_message():
    (message,) = parse_body(sample_body("chat_fragment_client_message.json")).messages
    assert message.text == "Also, do you ship to Austria?"


def test_echo_tag_is_read():
    echo, visitor = parse_body(sample_body("chat_fragment_api_echo.json")).messages
    assert (echo.received_from, echo.agent_name) == ("rulekit", "Anna")
    assert visitor.received_from is None


def test_singular_and_plural_forms_are_both_accepted():
    started = sample("chat_started_anonymous.json")
    started["messages"] = [started.pop("message")]
    assert [m.id for m in read_payload(started).messages] == ["Acb7t59BkCvoXi6SS"]

    fragment = sample("chat_fragment_agent_reply_from_app.json")
    fragment["message"] = fragment.pop("messages")[0]
    fragment["agent"] = fragment.pop("agents")[0]
    payload = read_payload(fragment)
    assert [m.id for m in payload.messages] == ["iZdJf2or9oetKumP9"]
    assert [a.name for a in payload.agents] == ["Anna Weber"]


def test_optional_fields_of_unexpected_types_read_as_missing():
    raw = sample("chat_started_anonymous.json")
    raw["client"].update(
        ip=5, displayedName={}, chatLink=[], info="x", basicInfo=None, lastVisit="yesterday"
    )
    raw["chatStartedPage"] = "https://example.com"
    raw["agents"] = "nobody"
    raw["message"].update(agentId=["x"], receivedFrom=7, createdAt="soon")
    payload = read_payload(raw)
    client = payload.client
    assert (client.ip, client.display_name, client.chat_link, client.last_visit) == (
        None,
        None,
        None,
        None,
    )
    assert payload.page is None and payload.agents == ()
    message = payload.messages[0]
    assert (message.agent_id, message.received_from, message.created_at) == (None, None, None)


def test_numeric_ids_are_read_as_strings():
    raw = sample("chat_started_anonymous.json")
    raw["client"]["id"] = 48213
    raw["message"]["id"] = 77
    payload = read_payload(raw)
    assert (payload.client.id, payload.messages[0].id) == ("48213", "77")


def test_a_message_without_id_gets_a_stable_content_id():
    raw = sample("chat_fragment_client_message.json")
    del raw["messages"][0]["id"]
    first = read_payload(raw).messages[0].id
    assert first == read_payload(raw).messages[0].id
    assert first.startswith("content-")
    raw["messages"][0]["message"] = "Something else"
    assert read_payload(raw).messages[0].id != first


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1741943525000, datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        (1741943525500.0, datetime(2025, 3, 14, 9, 12, 5, 500000, tzinfo=UTC)),
        ("1741943525000", datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        ("2025-03-14T09:12:05Z", datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        ("2025-03-14T10:12:05+01:00", datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        ("2025-03-14T09:12:05", datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        # epoch seconds (another service's habit): never read as milliseconds of 1970
        (1741943525, datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        (1741943525.5, datetime(2025, 3, 14, 9, 12, 5, 500000, tzinfo=UTC)),
        ("1741943525", datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        # a date as Meteor's EJSON writes it
        ({"$date": 1741943525000}, datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        ({"$date": "2025-03-14T09:12:05Z"}, datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)),
        ({"$date": {"$numberLong": "1741943525000"}}, None),
        ({"$date": 1, "x": 2}, None),
        (-1741943525, None),
        ("yesterday", None),
        (True, None),
        (None, None),
        ({}, None),
        (10**30, None),
        (float("nan"), None),
        ("9" * 5000, None),
    ],
)
def test_timestamps(value, expected):
    parsed = timestamp(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() is not None and parsed.tzinfo == UTC


def _started(**changes):
    raw = sample("chat_started_anonymous.json")
    raw.update(changes)
    return encode(raw)


def _client(**changes):
    raw = sample("chat_started_anonymous.json")
    raw["client"].update(changes)
    return encode(raw)


def _message(**changes):
    raw = sample("chat_fragment_client_message.json")
    raw["messages"][0].update(changes)
    return encode(raw)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (sample_body("malformed_truncated_body.txt"), "not valid JSON"),
        (sample_body("malformed_missing_client.json"), "no client object"),
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
        (b"[]", "must be a JSON object, got a list"),
        (b"null", "must be a JSON object, got null"),
        (b'{"client": {"id": "x"}}', "no eventName"),
        (_started(eventName="chatClosed"), "unknown eventName 'chatClosed'"),
        (_started(eventName=["chatStarted"]), "eventName must be a string, got a list"),
        (_started(client=["x"]), "client must be an object, got a list"),
        (_client(id=None), "client.id is missing"),
        (_client(id={"a": 1}), "client.id must be a string, got an object"),
        (_client(id=" "), "client.id is empty"),
        (_started(messages="Hello?"), "messages must be a list, got a string"),
        (_started(message="Hello?"), "message must be an object, got a string"),
        (_message(type=None), "messages[0] has no type"),
        (_message(type=1), "messages[0] type must be a string, got a number"),
        (_message(message=["Hi"]), "messages[0].message must be a string, got a list"),
        (_message(text=5), "messages[0].text must be a string, got a number"),
    ],
)
def test_malformed_bodies_are_channel_errors_saying_what_is_wrong(body, says):
    with pytest.raises(ChannelError) as caught:
        parse_body(body)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
