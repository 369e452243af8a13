"""The conversation key read at ingest, which keeps a conversation's events in order."""

from __future__ import annotations

import json

import pytest
from chatra_samples import make_provider, sample_body

from rulekit_chatra.payload import parse_body


def test_the_key_is_the_client_id_of_any_webhook():
    provider = make_provider()
    started = provider.conversation_key(json.loads(sample_body("chat_reopened_2_started.json")))
    transcript = provider.conversation_key(
        json.loads(sample_body("chat_reopened_1_transcript.json"))
    )
    assert started == transcript == "q8w7e6r5t4y3u2i1o9p8a7s6d5f4g3h2j1k9l8zx"


@pytest.mark.parametrize(
    "data",
    [[], [1], {}, {"client": 5}, {"client": {"id": ""}}, {"client": {"id": " "}}],
)
def test_no_key_for_bodies_that_do_not_name_a_client(data):
    assert make_provider().conversation_key(data) is None


@pytest.mark.parametrize("client_id", ["v42", " v42", "v42\t", "\u3000v42 ", 42, " 42 "])
def test_the_key_is_the_client_id_as_the_parser_reads_it(client_id):
    """Bodies the parser files under one client share the key (which orders them)."""
    body = json.loads(sample_body("chat_started_anonymous.json"))
    body["client"]["id"] = client_id
    provider = make_provider()
    parsed = parse_body(json.dumps(body))
    assert provider.conversation_key(body) == parsed.client.id == str(client_id).strip()
