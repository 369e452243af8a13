"""kill -9 of `rulekit run` at different points: every webhook answered 200 leads to its
action, duplicates stay within the documented bound, and the SQLite file stays intact.

The bound: a crash repeats only calls that the crashed daemon had started (recorded before the
request left) and whose outcome was not recorded — at most ``dispatcher.concurrency`` of them.
The tests read those calls from the file after each kill and check that exactly those, and no
other, may arrive twice."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sqlite3
from collections import Counter

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

from rulekit.store.records import INTERRUPTED

CONCURRENCY = 4
"""``dispatcher.concurrency`` in these tests: the most calls a crash can repeat."""


def integrity(folder) -> str:
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def replies(chatra) -> Counter:
    return Counter(message["clientId"] for message in chatra.sent)


def in_flight(folder, process) -> Counter:
    """The visitors whose reply call ``process`` had started and not finished when it died.

    Only its own: a call an earlier daemon left started stays so, under that daemon's name,
    until its lease has passed and another daemon makes it again; a daemon killed within the
    lease leaves it as it was. It is one call of the earlier crash, counted there."""
    owner = f"{socket.gethostname()}:{process.proc.pid}"  # as the daemon names itself
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        rows = conn.execute(
            "SELECT e.data FROM outbox o JOIN events e ON e.event_id = o.event_id"
            " WHERE o.status = 'pending' AND o.call_started_at IS NOT NULL"
            " AND o.call_started_by = ?",
            (owner,),
        ).fetchall()
    finally:
        conn.close()
    return Counter(json.loads(data)["client"]["id"] for (data,) in rows)


def assert_within_the_bound(sends: Counter, crashed: Counter) -> None:
    """Each visitor got one reply, plus at most one per crash that interrupted its call."""
    repeats = Counter({client: count - 1 for client, count in sends.items() if count > 1})
    assert repeats <= crashed, (repeats, crashed)


@pytest.mark.slow
def test_kill_after_the_ack_loses_nothing(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra, dispatcher={"concurrency": CONCURRENCY})
    process = processes(config, "--job-lease", "2").wait_ready()
    acked = []
    for n in range(1, 21):
        if httpx.post(process.webhook_url, content=chat_started(n)).status_code == 200:
            acked.append(f"client{n:08d}")
    process.kill()  # some of them were not processed yet, or not dispatched
    assert integrity(tmp_path) == "ok"
    crashed = in_flight(tmp_path, process)
    assert sum(crashed.values()) <= CONCURRENCY
    processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: set(acked) <= set(replies(chatra)), timeout=30)
    assert len(acked) == 20
    # only a call under way at the kill is made again
    assert_within_the_bound(replies(chatra), crashed)


@pytest.mark.slow
def test_kill_mid_dispatch_resends_after_the_lease_and_only_once(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config, "--job-lease", "2").wait_ready()
    chatra.hang(30)  # the call reaches the service, the answer never comes back in time
    assert httpx.post(process.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: chatra.sent, timeout=30)  # a cold worker evaluates it first
    process.kill()
    restarted = processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: len(chatra.sent) == 2, timeout=30)

    def done() -> bool:
        conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
        try:
            return conn.execute("SELECT status FROM outbox").fetchall() == [("done",)]
        finally:
            conn.close()

    wait_for(done)  # the only job is done: nothing more can be sent
    assert replies(chatra) == Counter({"client00000001": 2})  # the bound: one duplicate
    conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
    try:  # the interrupted call is on record as an attempt
        errors = [error for (error,) in conn.execute("SELECT error FROM attempts ORDER BY id")]
    finally:
        conn.close()
    assert errors == [INTERRUPTED, None]
    assert restarted.terminate() == 0
    assert integrity(tmp_path) == "ok"


async def _send_then_kill(process, first: int, count: int, after: int) -> list[int]:
    """Post ``count`` webhooks at once and kill the daemon as soon as ``after`` of them have
    been answered 200 (a point in the work that does not depend on the machine's speed); the
    numbers of those answered 200."""
    acked: list[int] = []
    enough = asyncio.Event()

    async def one(client: httpx.AsyncClient, k: int) -> None:
        try:
            response = await client.post(process.webhook_url, content=chat_started(k))
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            acked.append(k)
            if len(acked) >= after:
                enough.set()

    async with httpx.AsyncClient(timeout=30) as client:
        sending = asyncio.gather(*(one(client, k) for k in range(first, first + count)))
        waiting = asyncio.ensure_future(enough.wait())
        await asyncio.wait([sending, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        assert enough.is_set(), f"only {len(acked)} of {count} webhooks were accepted"
        process.kill()  # the others: before commit, after commit before the 200, mid-dispatch...
        await sending
    return acked


def _kill_loop(tmp_path, processes, chatra, cycles: int, per_cycle: int) -> None:
    config = write_setup(tmp_path, chatra=chatra, dispatcher={"concurrency": CONCURRENCY})
    rng = random.Random(cycles)
    acked: set[str] = set()
    crashed: Counter = Counter()
    for cycle in range(cycles):
        process = processes(config, "--job-lease", "2").wait_ready()
        first = cycle * per_cycle + 1
        done = asyncio.run(
            _send_then_kill(process, first, per_cycle, rng.randint(1, per_cycle // 2))
        )
        acked |= {f"client{k:08d}" for k in done}
        assert integrity(tmp_path) == "ok"
        interrupted = in_flight(tmp_path, process)
        assert sum(interrupted.values()) <= CONCURRENCY  # the slots are held until recorded
        crashed += interrupted  # each crash's calls once: a repeat per crash that cut it off
    final = processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: acked <= set(replies(chatra)), timeout=60)
    assert final.terminate() == 0
    # each crash repeats at most the calls under way at that moment, and only those
    assert_within_the_bound(replies(chatra), crashed)
    assert integrity(tmp_path) == "ok"


def test_kill_at_random_points(tmp_path, processes, chatra):
    _kill_loop(tmp_path, processes, chatra, cycles=2, per_cycle=30)


@pytest.mark.slow
def test_kill_at_random_points_many_times(tmp_path, processes, chatra):
    _kill_loop(tmp_path, processes, chatra, cycles=10, per_cycle=100)
