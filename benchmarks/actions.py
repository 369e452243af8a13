"""Actions delivered per second to the fake Slack and Telegram APIs, against raw httpx.

For each service: the same number of messages over many destinations in parallel, once as raw
``httpx`` POSTs to the fake (no SDK, no pacing) and once through the real action (the SDK
client, classification, and a :class:`~rulekit.actions.pacing.Pacer` with short per-destination
limits). Prints both rates, their ratio (target: >= 0.5) and, from the times the fake recorded,
the most messages any destination got within one limit period (must not exceed the limit).
The fakes run in a child process, so their threads do not compete with the client for the GIL.
Quick by default; ``--messages`` / ``--destinations`` scale it up; ``--smoke`` only checks that
it runs (5 destinations, 50 messages).

    python benchmarks/actions.py [--destinations 50] [--messages 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from rulekit.actions.base import ActionContext
from rulekit.actions.pacing import Limit, Pacer
from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.config import Config
from rulekit.event import Event
from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram

PER_DESTINATION = Limit(1, 0.02)  # 50 messages/s per destination: "1/s", sped up 50 times
JITTER = 0.005  # how much earlier than sent a request may be recorded (loopback, thread wake-up)
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def _serve(kind: str, connection) -> None:
    fake = FakeSlack() if kind == "slack" else FakeTelegram()
    with fake:
        connection.send((fake.base_url, fake.token))
        connection.recv()  # "stop"
        if kind == "slack":
            rows = [(m.channel, m.at, m.status) for m in fake.messages()]
        else:
            rows = [(m.chat_id, m.at, m.status) for m in fake.messages()]
        connection.send(rows)


@contextmanager
def fake_in_child(kind: str) -> Iterator[tuple[str, str, list]]:
    """Run a fake in a child process; yields its base URL, token, and (after the block) the
    recorded (destination, monotonic time, status) of every message."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_serve, args=(kind, child), daemon=True)
    process.start()
    base_url, token = parent.recv()
    recorded: list = []
    try:
        yield base_url, token, recorded
    finally:
        parent.send("stop")
        recorded.extend(parent.recv())
        process.join(5)


async def raw_posts(url: str, bodies: list[dict], headers: dict, concurrency: int) -> float:
    """POST every body with plain httpx, ``concurrency`` at a time: one client (and connection)
    per worker, since one shared httpx pool slows down under many concurrent requests."""
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        transport = httpx.AsyncHTTPTransport(socket_options=NODELAY)
        async with httpx.AsyncClient(transport=transport, headers=headers) as client:
            while not queue.empty():
                response = await client.post(url, json=queue.get_nowait())
                response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def through_actions(action, params: list, concurrency: int) -> float:
    pacer = Pacer()
    context = ActionContext(event=Event(channel="bench", event="created"), config=Config())
    queue: asyncio.Queue = asyncio.Queue()
    for item in params:
        queue.put_nowait(item)
    await action.execute(params[0], context)  # connect (and getMe) outside the measurement

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            async with pacer.acquire(action.pacing(item)):
                await action.execute(item, context)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await action.aclose()


def most_in_a_period(rows: list, skip: int) -> int:
    """The most messages one destination got within one limit period (less the jitter)."""
    times: dict[str, list[float]] = defaultdict(list)
    for destination, at, status in rows[skip:]:
        if status == 200:
            times[destination].append(at)
    window = PER_DESTINATION.period - JITTER
    most = 0
    for series in times.values():
        series.sort()
        for i, first in enumerate(series):
            most = max(most, sum(1 for t in series[i:] if t < first + window))
    return most


def bench(kind: str, destinations: int, messages: int) -> dict:
    names = [f"C{n:04d}" if kind == "slack" else str(1000 + n) for n in range(destinations)]
    with fake_in_child(kind) as (base_url, token, rows):
        if kind == "slack":
            bodies = [
                {"channel": names[i % destinations], "text": f"m{i}"} for i in range(messages)
            ]
            url, headers = f"{base_url}chat.postMessage", {"Authorization": f"Bearer {token}"}
            action = Slack(
                SlackIntegration(token=token, base_url=base_url),
                limits={"channel": PER_DESTINATION},
            )
            params = [SlackParams(**body) for body in bodies]
        else:
            bodies = [
                {"chat_id": names[i % destinations], "text": f"m{i}"} for i in range(messages)
            ]
            url, headers = f"{base_url}{token}/sendMessage", {}
            action = Telegram(
                TelegramIntegration(token=token, base_url=base_url),
                limits={"chat": PER_DESTINATION, "bot": Limit(100_000, 1)},
            )
            params = [TelegramParams(**body) for body in bodies]
        raw = asyncio.run(raw_posts(url, bodies, headers, destinations))
        paced = asyncio.run(through_actions(action, params, destinations))
    return {"raw": raw, "actions": paced, "most": most_in_a_period(rows, messages + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destinations", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run")
    args = parser.parse_args()
    if args.smoke:
        args.destinations, args.messages = 5, 50
    print(
        f"{args.messages} messages over {args.destinations} destinations in parallel; "
        f"limit per destination {PER_DESTINATION.count} per {PER_DESTINATION.period:g} s"
    )
    ok = True
    for name in ("slack", "telegram"):
        figures = bench(name, args.destinations, args.messages)
        raw_rate = args.messages / figures["raw"]
        action_rate = args.messages / figures["actions"]
        ratio = action_rate / raw_rate
        held = figures["most"] <= PER_DESTINATION.count
        ok = ok and held and ratio >= 0.5
        print(
            f"{name:9s} raw httpx {raw_rate:6.0f}/s   actions {action_rate:6.0f}/s   "
            f"ratio {ratio:4.2f}x   most per destination per period {figures['most']} "
            f"({'limit held' if held else 'LIMIT EXCEEDED'})"
        )
    print("ok" if ok else "target missed")


if __name__ == "__main__":
    main()
