"""The conversation key read at ingest, which keeps a conversation's events in order."""

from __future__ import annotations

import json

import pytest
from chatra_samples import make_provider, sample_body


def test_the_key_is_the_client_id_of_any_webhook():
    provider = make_provider()
    started = provider.conversation_key(json.loads(sample_body("chat_reopened_2_started.json")))
    transcript = provider.conversation_key(
        json.loads(sample_body("chat_reopened_1_transcript.json"))
    )
    assert started == transcript == "q8w7e6r5t4y3u2i1o9p8a7s6d5f4g3h2j1k9l8zx"


@pytest.mark.parametrize(
    "data", [[], [1], {}, {"client": 5}, {"client": {"id": 7}}, {"client": {"id": ""}}]
)
def test_no_key_for_bodies_that_do_not_name_a_client(data):
    assert make_provider().conversation_key(data) is None
