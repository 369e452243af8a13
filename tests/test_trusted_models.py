"""Models built from data rulekit made itself (``trusted``, ``replaced``) are the models
validation would make from the same values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.models import trusted_whole, whole_builder

AT = datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC)


def event_values() -> dict[str, object]:
    return {
        "id": "online-chat:msg:m1",
        "channel": "online-chat",
        "event": "message",
        "occurred_at": AT,
        "recovered": True,
        "conversation": Conversation(id="online-chat:v1", status="open", group="support"),
        "client": Client(id="v1", name="Maria", country="Spain"),
        "message": Message(id="m1", text="Hola", author="client", created_at=AT),
        "agent": Agent(),
        "raw": {"eventName": "chatFragment"},
    }


def same(built: object, validated: object) -> None:
    assert built == validated
    assert type(built) is type(validated)
    assert built.model_fields_set == validated.model_fields_set  # type: ignore[attr-defined]
    assert built.model_dump_json() == validated.model_dump_json()  # type: ignore[attr-defined]


def test_a_trusted_event_is_the_validated_one():
    same(Event.trusted(**event_values()), Event(**event_values()))


def test_a_trusted_event_without_an_id_gets_the_derived_one():
    values = event_values()
    del values["id"]
    event = Event.trusted(**values)
    same(event, Event(**values))
    assert event.id.startswith("online-chat:message:")


def test_a_trusted_event_has_its_own_trigger_and_defaults():
    first, second = Event.trusted(channel="c", event="e", id="1"), Event(channel="c", event="e")
    assert first.trigger.id == "1" and first.trigger.client is first.client
    fresh = Event.trusted(channel="c", event="e", id="2")
    assert fresh.changed is not first.changed and fresh.conversation is not first.conversation
    assert first.occurred_at.tzinfo is not None and second.occurred_at.tzinfo is not None


def test_a_trusted_client_derives_its_country_code():
    same(Client.trusted(id="v1", country="Germany"), Client(id="v1", country="Germany"))
    assert Client.trusted(id="v1", country="Germany").country_code == "DE"
    assert Client.trusted(id="v1", country="Atlantis").country_code is None
    assert Client.trusted(id="v1", country="Germany", country_code="XX").country_code == "XX"


def test_trusted_parts_are_the_validated_ones():
    same(Agent.trusted(), Agent())
    same(Message.trusted(id="m", text="hi"), Message(id="m", text="hi"))
    same(Conversation.trusted(id="c", status="open"), Conversation(id="c", status="open"))


def test_a_required_field_left_out_is_an_error():
    with pytest.raises(TypeError, match="channel"):
        Event.trusted(event="message", id="x")


def test_replaced_is_model_copy_with_an_update():
    conversation = Conversation(id="c", status="open", tags=["vip"])
    replaced = conversation.replaced(status="closed", link="https://chat")
    same(replaced, conversation.model_copy(update={"status": "closed", "link": "https://chat"}))
    assert conversation.status == "open"  # the original is unchanged
    event = Event(**event_values())
    copy = event.replaced(event="closed")
    assert copy.event == "closed" and copy.trigger.event == "closed"
    assert event.trigger.event == "message"


def test_trusted_whole_is_the_validated_model_and_wants_every_field():
    values = event_values()
    whole = {name: values.get(name) for name in Event.model_fields}
    whole["origin"], whole["changed"] = "channel", {}
    same(trusted_whole(Event, whole, frozenset(values)), Event(**values))
    message = {name: None for name in Message.model_fields} | {"edited": False, "id": "m"}
    same(trusted_whole(Message, message, frozenset({"id"})), Message(id="m"))
    del whole["changed"]
    with pytest.raises(TypeError, match="changed"):
        trusted_whole(Event, whole, frozenset(values))


def test_a_whole_builder_without_derivation_leaves_derived_fields_as_given():
    """``derives=False`` is for callers that give what validation would derive: the build
    leaves the fields as given (an event's empty id stays empty, a client's code unset), where
    the usual builder derives them as validation does."""
    values = event_values()
    del values["id"]
    whole = {name: values.get(name) for name in Event.model_fields}
    whole["origin"], whole["changed"], whole["id"] = "channel", {}, ""
    derived = whole_builder(Event)(dict(whole), frozenset(values))
    assert derived.id == Event(**values).id and derived.id.startswith("online-chat:message:")
    assert whole_builder(Event, derives=False)(dict(whole), frozenset(values)).id == ""
    client = {name: None for name in Client.model_fields} | {"country": "Germany", "custom": {}}
    assert whole_builder(Client)(dict(client), frozenset({"country"})).country_code == "DE"
    plain = whole_builder(Client, derives=False)(dict(client), frozenset({"country"}))
    assert plain.country_code is None and plain.model_fields_set == {"country"}
    assert whole_builder(Event) is whole_builder(Event)  # (the usual one is kept)
