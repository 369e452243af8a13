"""What the dispatcher holds while a service is paused: the jobs it claimed wait for their turn,
and the data of their events stays within a budget of bytes (the others' events are read from
the store when their turn comes), not one event per held job: 256 jobs of events from 4 MiB
bodies would be 1 GB.

A real daemon, SQLite, the fake Chatra on loopback answering the first reply with a 429 whose
Retry-After pauses the account's calls for longer than the test."""

from __future__ import annotations

import gc
import tracemalloc

import httpx
import pytest
from daemons import Server, chat_started, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra

from rulekit.actions.pacing import service_key
from rulekit.runtime.dispatcher import HELD_BYTES
from rulekit.runtime.handover import RECORDED_BYTES

MB = 1_000_000


def paused(server: Server) -> float:
    """Seconds left of the pause of the channel's Chatra account in the daemon's pacer."""
    account = server.daemon.snapshot.providers["online-chat"].service_account

    async def read_pause() -> float:
        assert server.daemon.dispatcher is not None
        return server.daemon.dispatcher.pacer.paused_for(service_key(account))

    return float(server.call(read_pause()))


def held(server: Server) -> int:
    async def read_held() -> int:
        assert server.daemon.dispatcher is not None
        return server.daemon.dispatcher.held

    return int(server.call(read_held()))


@pytest.mark.slow
def test_the_events_of_jobs_held_by_a_paused_service_stay_within_a_byte_budget(
    tmp_path, serve, chatra: FakeChatra
):
    count = 4 * HELD_BYTES // MB
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    chatra.rate_limit(retry_after=3000)  # the first reply: the account paused past the test
    assert httpx.post(server.webhook_url, content=chat_started(0)).status_code == 200
    wait_for(lambda: paused(server) > 0, timeout=30)
    tracemalloc.start()
    try:
        for n in range(1, count + 1):
            body = chat_started(n, text=f"{n} " + "x" * MB)
            assert httpx.post(server.webhook_url, content=body).status_code == 200
        # every reply claimed, each in its conversation's lane, waiting for the account
        wait_for(lambda: held(server) == count + 1, timeout=120)
        gc.collect()
        alive, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # all the events' data is count MB; the dispatcher keeps at most HELD_BYTES of it, the
    # processor at most RECORDED_BYTES of the events not yet claimed (none by now)
    assert alive < HELD_BYTES + RECORDED_BYTES + 8 * MB
    assert len(chatra.sent) == 1  # the reply refused: nothing went during the pause


@pytest.mark.slow
def test_jobs_whose_events_were_not_kept_are_sent_with_their_own_event(
    tmp_path, serve, chatra: FakeChatra
):
    """Once the pause is over, the jobs whose events did not fit in the budget read them from
    the store: each reply is sent once, to its client, with what its own event says."""
    count = HELD_BYTES // MB + 4
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    chatra.rate_limit(retry_after=2)
    assert httpx.post(server.webhook_url, content=chat_started(0)).status_code == 200
    wait_for(lambda: paused(server) > 0, timeout=30)
    for n in range(1, count + 1):
        body = chat_started(n, text=f"{n} " + "x" * MB)
        assert httpx.post(server.webhook_url, content=body).status_code == 200
    wait_for(lambda: len(chatra.sent) == count + 2, timeout=120)  # (the refused one again)
    sent = sorted((r["clientId"], r["text"]) for r in chatra.sent[1:])
    assert sent == sorted((f"client{n:08d}", f"Hello Visitor {n}") for n in range(count + 1))
