"""What the evaluation worker receives is the request the daemon sent: events come back equal but
for the provider's raw payload (which rules cannot read), with the same fields set, in the same
order, their values as they were, and a timer's fired event keeps its trigger."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from daemons import chat_started, write_setup

from rulekit.event import Client, Conversation, Event, Message
from rulekit.runtime.worker import Firing, Request
from rulekit.snapshot import load_snapshot
from rulekit.store.memory import MemoryStore

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def sent(request: Request) -> Request:
    """``request`` as the worker's end of the pipe unpickles it."""
    received = pickle.loads(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
    assert isinstance(received, Request)
    return received


def test_events_arrive_equal_with_the_same_fields_set(tmp_path) -> None:
    provider = load_snapshot(write_setup(tmp_path)).providers["online-chat"]
    with MemoryStore().transaction() as state:
        parsed = provider.parse(chat_started(1), state)
    bare = Event(channel="online-chat", event="message", message=Message(text="hi"))
    request = Request([*parsed, bare], {"c1": {"rule": T0}}, frozenset({"x"}))
    assert parsed[0].raw is not None
    received = sent(request)
    assert received.events == [event.model_copy(update={"raw": None}) for event in request.events]
    assert [e.model_fields_set for e in received.events] == [
        e.model_fields_set - {"raw"} for e in request.events
    ]
    assert received.events[-1].occurred_at == bare.occurred_at  # a default, not made anew
    assert all(event.raw is None for event in received.events)
    assert (received.cooldowns, received.skip) == (request.cooldowns, request.skip)


def test_a_fired_event_keeps_its_trigger() -> None:
    trigger = Event(
        id="e1",
        channel="online-chat",
        event="message",
        occurred_at=T0,
        conversation=Conversation(id="c1", status="open"),
        message=Message(text="first"),
    )
    fired = trigger.at_fire_time(Conversation(id="c1", status="closed"), Client(id="v1"))
    request = Request([fired], {}, firing=Firing("Follow up", T0, T0))
    received = sent(request).events[0]
    assert received == fired
    assert received.conversation.status == "closed"
    assert received.trigger.conversation.status == "open"
    assert received.trigger.message.text == "first"


def test_events_arrive_as_they_were_sent_down_to_their_parts() -> None:
    event = Event(
        id="e1",
        channel="online-chat",
        event="message",
        occurred_at=T0,
        conversation=Conversation(id="c1", fields={"due": T0, "sizes": (1, 2)}),
        client=Client(id="v1", custom={"plan": {"tier": 2}}),
        raw={"large": "payload"},
    )
    received = sent(Request([event], {})).events[0]
    assert received == event.model_copy(update={"raw": None})
    assert list(received.__dict__) == list(event.__dict__)  # (model_dump keeps this order)
    assert received.conversation.fields == {"due": T0, "sizes": (1, 2)}  # not made JSON
    for part in ("conversation", "client", "message", "agent"):
        assert getattr(received, part).model_fields_set == getattr(event, part).model_fields_set
    received.conversation.tags.append("mine")  # the worker's own copy
    assert event.conversation.tags == []
