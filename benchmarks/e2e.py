"""End to end: webhook → rules → autoreply at a fake Chatra, at a steady 500 webhooks/s.

    python benchmarks/e2e.py               # 500/s for 10 s over 1,000 conversations
    python benchmarks/e2e.py --quick       # 5 s
    python benchmarks/e2e.py --rate 300 --seconds 20 --conversations 5000

A `rulekit run` subprocess (SQLite, synchronous=FULL) receives a mix of Chatra ``chatStarted``
and ``chatFragment`` webhooks (open loop: sent on schedule whatever the answers), spread over
many conversations; a rule answers every ``created`` and ``message`` event with an autoreply
through the fake Chatra API, which records when each reply arrived. Printed: the ack latency,
and p50/p99 from sending the webhook to the reply arriving at the fake (target p99 <= 50 ms),
and the daemon's RSS. Per-destination pacing does not apply to autoreplies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import (
    Daemon,
    chat_fragment,
    chat_started,
    percentile,
    write_config,
)

RULES = """\
- name: Answer
  on: {channel: online-chat, event: [created, message]}
  do:
    - autoreply: {text: "re {{ message.id }}"}
"""


async def send(url: str, plan: list[tuple[str, bytes]], rate: float) -> tuple[dict, list]:
    sent: dict[str, float] = {}
    acks: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(message_id: str, body: bytes) -> None:
            started = time.monotonic()
            sent[message_id] = started
            async with session.post(url, data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            acks.append(time.monotonic() - started)

        tasks = []
        began = time.monotonic()
        for index, (message_id, body) in enumerate(plan):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(message_id, body)))
        await asyncio.gather(*tasks)
    return {"sent": sent, "statuses": statuses}, acks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--conversations", type=int, default=1000)
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds

    from rulekit_chatra.testing import FakeChatra

    rng = random.Random(7)
    total = int(args.rate * seconds)
    plan: list[tuple[str, bytes]] = []
    started: set[int] = set()
    for n in range(total):
        conversation = rng.randrange(args.conversations)
        message_id = f"m{n:09d}"
        if conversation in started:
            plan.append((message_id, chat_fragment(conversation, message_id)))
        else:
            started.add(conversation)
            plan.append((message_id, chat_started(conversation, message_id)))

    with FakeChatra() as chatra, tempfile.TemporaryDirectory() as folder:
        config = write_config(
            Path(folder),
            RULES,
            f"    base_url: {chatra.base_url}\n"
            f"    public_key: {chatra.public_key}\n"
            f"    secret_key: {chatra.secret_key}\n"
            "    default_agent_id: agent0001\n",
        )
        daemon = Daemon(config).wait_ready()
        try:
            cpu_before, wall_before = daemon.cpu_seconds(), time.monotonic()
            own_before = time.process_time()
            result, acks = asyncio.run(send(daemon.webhook_url, plan, args.rate))
            deadline = time.monotonic() + 60
            while len(chatra.sent) < total and time.monotonic() < deadline:
                time.sleep(0.1)
            rss = daemon.rss_mb()
            wall = time.monotonic() - wall_before
            cpu = (daemon.cpu_seconds() - cpu_before) / wall
            own_cpu = (time.process_time() - own_before) / wall
        finally:
            daemon.stop()
        arrived: dict[str, float] = {}
        for request in chatra.requests:
            try:
                text = json.loads(request.body)["text"]
            except (ValueError, KeyError, TypeError):
                continue
            arrived.setdefault(text.removeprefix("re "), request.at)
    latencies = [(arrived[m] - result["sent"][m]) * 1000 for m in result["sent"] if m in arrived]
    print(
        f"{total} webhooks at {args.rate:g}/s over {args.conversations} conversations "
        f"({len(started)} chats started, the rest messages); statuses {result['statuses']}"
    )
    ack50, ack99 = percentile(acks, 50) * 1000, percentile(acks, 99) * 1000
    print(f"ack latency: p50 {ack50:.1f} ms, p99 {ack99:.1f} ms")
    print(
        f"webhook -> request at the fake Chatra: {len(latencies)}/{total} arrived, "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
        f"max {max(latencies, default=float('nan')):.1f} ms (target p99 <= 50 ms)"
    )
    print(
        f"daemon RSS after the run: {rss:.0f} MB; CPU on average: daemon {cpu:.2f} cores, "
        f"load generator and fake Chatra {own_cpu:.2f} cores"
    )


if __name__ == "__main__":
    main()
