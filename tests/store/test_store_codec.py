"""How the SQL stores write JSON: traces as the same text as every other document."""

from __future__ import annotations

import json

from rulekit.event import Event
from rulekit.store.codec import event_json, to_json, trace_json


def test_a_trace_is_written_as_the_same_text_as_any_document() -> None:
    trace = {
        "rules_version": "abc123",
        "rules": [
            {
                "name": "vip <é>",
                "matched": True,
                "sources": ["client.email.endswith('@vip.example')"],
                "outcomes": "T",
            },
            {"name": "b", "matched": False, "reason": "stopped by rule 'vip'", "outcomes": ""},
        ],
        "plan": [{"rule": "vip", "action": "slack", "params": {"n": 1, "x": 0.5, "l": [None]}}],
        "errors": ["line\nbreak \u2028 \x1b"],
        "excluded": 3,
    }
    assert trace_json(trace) == to_json(trace)
    assert json.loads(trace_json(trace)) == trace


def test_what_the_fast_encoder_refuses_is_written_as_before() -> None:
    lone = {"errors": ["\ud800 a lone surrogate"], "rules": [], "keys": {True: 1}}
    assert trace_json(lone) == to_json(lone)


def test_an_event_is_stored_as_the_json_of_its_public_data() -> None:
    event = Event.model_validate(
        {
            "id": "online-chat:msg:1",
            "channel": "online-chat",
            "event": "created",
            "occurred_at": "2024-05-01T12:00:00.123456+00:00",
            "conversation": {"id": "c1", "tags": ["vip", "é"]},
            "client": {"id": "k1", "name": "Zoë <z@x>", "custom": {"n": 1, "x": 0.5, "l": [None]}},
            "message": {"id": "1", "text": 'line\nbreak \u2028 \x1b "quoted" / ünïcode'},
            "raw": {"secret": "stays in the inbox"},
        }
    )
    assert event_json(event) == to_json(event.public())
    assert "secret" not in event_json(event)
