"""kill -9 of `rulekit run` at different points: every webhook answered 200 leads to its
action, duplicates stay within the documented bound (one per crash per job in flight), and
the SQLite file stays intact."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup


def integrity(folder) -> str:
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def replies(chatra) -> Counter:
    return Counter(message["clientId"] for message in chatra.sent)


def test_kill_after_the_ack_loses_nothing(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config, "--job-lease", "2").wait_ready()
    acked = []
    for n in range(1, 21):
        if httpx.post(process.webhook_url, content=chat_started(n)).status_code == 200:
            acked.append(f"client{n:08d}")
    process.kill()  # some of them were not processed yet, or not dispatched
    assert integrity(tmp_path) == "ok"
    processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: set(acked) <= set(replies(chatra)), timeout=30)
    assert len(acked) == 20
    # a kill between a call and its record resends it once at most
    assert max(replies(chatra).values()) <= 2


def test_kill_mid_dispatch_resends_after_the_lease_and_only_once(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config, "--job-lease", "2").wait_ready()
    chatra.hang(30)  # the call reaches the service, the answer never comes back in time
    assert httpx.post(process.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: chatra.sent, timeout=10)
    process.kill()
    restarted = processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: len(chatra.sent) == 2, timeout=30)

    def done() -> bool:
        conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
        try:
            return conn.execute("SELECT status FROM outbox").fetchall() == [("done",)]
        finally:
            conn.close()

    wait_for(done)
    time.sleep(0.5)
    assert replies(chatra) == Counter({"client00000001": 2})  # the bound: one duplicate
    assert restarted.terminate() == 0
    assert integrity(tmp_path) == "ok"


async def _send_then_kill(process, first: int, count: int, delay: float) -> list[int]:
    """Post ``count`` webhooks at once and kill the daemon after ``delay`` seconds; the
    numbers of those answered 200."""

    async def one(client: httpx.AsyncClient, k: int) -> int | None:
        try:
            response = await client.post(process.webhook_url, content=chat_started(k))
        except httpx.HTTPError:
            return None
        return k if response.status_code == 200 else None

    async with httpx.AsyncClient(timeout=5) as client:
        sending = asyncio.gather(*(one(client, k) for k in range(first, first + count)))
        await asyncio.sleep(delay)
        process.kill()  # before commit, after commit before the 200, mid-dispatch...
        return [k for k in await sending if k is not None]


def _kill_loop(tmp_path, processes, chatra, cycles: int, per_cycle: int) -> None:
    config = write_setup(tmp_path, chatra=chatra)
    rng = random.Random(cycles)
    acked: set[str] = set()
    for cycle in range(cycles):
        process = processes(config, "--job-lease", "2").wait_ready()
        first = cycle * per_cycle + 1
        done = asyncio.run(_send_then_kill(process, first, per_cycle, rng.uniform(0.0, 0.3)))
        acked |= {f"client{k:08d}" for k in done}
        assert integrity(tmp_path) == "ok"
    assert acked
    final = processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: acked <= set(replies(chatra)), timeout=60)
    assert final.terminate() == 0
    counts = replies(chatra)
    duplicates = sum(count - 1 for count in counts.values())
    # each crash can repeat at most the jobs that were in flight at that moment
    assert duplicates <= cycles * 32
    assert integrity(tmp_path) == "ok"


def test_kill_at_random_points(tmp_path, processes, chatra):
    _kill_loop(tmp_path, processes, chatra, cycles=2, per_cycle=30)


@pytest.mark.slow
def test_kill_at_random_points_many_times(tmp_path, processes, chatra):
    _kill_loop(tmp_path, processes, chatra, cycles=10, per_cycle=100)
