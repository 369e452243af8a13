"""The ledger of request keys: one key, one request, seen by every daemon on the store; bounded
in number, age and the size of what it keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from store_backends import run_threads

from rulekit.event import Client, Conversation
from rulekit.store.requests import IN_FLIGHT, KEEP, MAX_ANSWER, MAX_KEYS, KeptRequest

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_a_key_is_one_request_until_it_fails(store) -> None:
    with store.transaction() as state:
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=T0) is None
        state.finish_request_key("anna", "k", 200, b'{"ok":1}')
        assert state.claim_request_key("anna", "k", "tags-new", "c1", now=T0) == KeptRequest(
            "tags-vip", (200, b'{"ok":1}')
        )
        # each agent's keys are their own
        assert state.claim_request_key("boris", "k", "tags-vip", "c1", now=T0) is None
        # taken, its request still in progress
        assert state.claim_request_key("boris", "k", "x", "c1", now=T0) == KeptRequest(
            "tags-vip", in_flight=True
        )
        state.release_request_key("boris", "k")
        assert state.claim_request_key("boris", "k", "priority", "c1", now=T0) is None


def test_another_daemon_and_a_restart_see_the_keys(backend) -> None:
    if not backend.durable:
        pytest.skip("the in-memory store is one process")
    first = backend.open()
    with first.transaction() as state:
        state.claim_request_key("anna", "k", "tags-vip", "c1", now=T0)
        state.finish_request_key("anna", "k", 200, b"{}")
    first.close()
    second = backend.open()  # another daemon, or the same one started again
    with second.transaction() as state:
        kept = state.claim_request_key("anna", "k", "tags-vip", "c1", now=T0)
    assert kept == KeptRequest("tags-vip", (200, b"{}"))


def test_two_claims_of_one_key_at_once_are_one_new(backend) -> None:
    if not backend.durable:
        pytest.skip("the in-memory store is one process")
    stores = [backend.open() for _ in range(4)]
    new: list[int] = []
    waiting: list[KeptRequest | None] = []

    def claim(index: int) -> None:
        with stores[index].transaction() as state:
            kept = state.claim_request_key("anna", "k", "reply", "c1", now=T0)
        if kept is None:
            new.append(index)
        else:
            waiting.append(kept)

    run_threads(claim, len(stores))
    assert len(new) == 1
    assert waiting == [KeptRequest("reply", in_flight=True)] * (len(stores) - 1)


def test_a_claim_in_flight_holds_off_retries_until_it_finishes_or_is_lost(store) -> None:
    in_flight = KeptRequest("tags-vip", in_flight=True)
    almost = T0 + IN_FLIGHT - timedelta(seconds=1)
    lost = T0 + IN_FLIGHT + timedelta(seconds=1)
    with store.transaction() as state:
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=T0) is None
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=almost) == in_flight
        # lost with its daemon: the retry takes the key over, and is in flight in its turn
        assert state.claim_request_key("anna", "k", "other", "c1", now=lost) == in_flight
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=lost) is None
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=lost) == in_flight
        # finished without an answer kept (a reply): a retry runs again
        state.finish_request_key("anna", "k", 202)
        later = lost + IN_FLIGHT * 2
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=later) == KeptRequest(
            "tags-vip"
        )
        # a finished request is never taken over, whatever the time
        state.finish_request_key("anna", "k", 200, b"{}")
        assert state.claim_request_key("anna", "k", "tags-vip", "c1", now=later) == KeptRequest(
            "tags-vip", (200, b"{}")
        )


def test_two_retries_of_a_lost_claim_at_once_are_one_new(backend) -> None:
    if not backend.durable:
        pytest.skip("the in-memory store is one process")
    stores = [backend.open() for _ in range(4)]
    with stores[0].transaction() as state:
        assert state.claim_request_key("anna", "k", "tags", "c1", now=T0) is None
    new: list[int] = []
    lost = T0 + IN_FLIGHT + timedelta(seconds=1)

    def claim(index: int) -> None:
        with stores[index].transaction() as state:
            if state.claim_request_key("anna", "k", "tags", "c1", now=lost) is None:
                new.append(index)

    run_threads(claim, len(stores))
    assert len(new) == 1


def test_keys_are_bounded_in_number_age_and_kept_answers(store) -> None:
    with store.transaction() as state:
        for number in range(MAX_KEYS + 10):
            state.claim_request_key("anna", f"k{number}", "print", "c1", now=T0)
        assert state.claim_request_key("anna", f"k{MAX_KEYS + 9}", "x", "c1", now=T0)
        assert state.claim_request_key("anna", "k0", "other", "c1", now=T0) is None  # let go
        state.finish_request_key("anna", "k0", 200, b"x" * (MAX_ANSWER + 1))
        assert state.claim_request_key("anna", "k0", "x", "c1", now=T0) == KeptRequest("other")
        state.finish_request_key("anna", "k0", 200, b"x" * MAX_ANSWER)
        kept = state.claim_request_key("anna", "k0", "x", "c1", now=T0)
        assert kept is not None and kept.answer == (200, b"x" * MAX_ANSWER)
        later = T0 + KEEP + timedelta(seconds=1)
        assert state.claim_request_key("anna", "k0", "yet another", "c1", now=later) is None


def test_forgetting_a_client_forgets_the_keys_of_their_conversations(store) -> None:
    with store.transaction() as state:
        state.save_client("online-chat", Client(id="c-jane", name="Jane"))
        state.save_conversation(
            "online-chat", "c-jane", Conversation(id="conv-1", page="/orders/77")
        )
        state.claim_request_key("anna", "k1", "tags", "conv-1", now=T0)
        state.finish_request_key("anna", "k1", 200, b'{"page": "/orders/77"}')
        state.claim_request_key("anna", "k2", "tags", "conv-2", now=T0)
        state.forget_client("c-jane")
        assert state.claim_request_key("anna", "k1", "tags", "conv-1", now=T0) is None
        assert state.claim_request_key("anna", "k2", "x", "conv-2", now=T0) is not None
