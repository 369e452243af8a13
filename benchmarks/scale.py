"""Scaling out: processed events/s with 1, 2 and 3 daemons on one PostgreSQL database, with a
single daemon on SQLite as the reference, in one run.

    python benchmarks/scale.py --postgres postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/scale.py --quick     # fewer events (URL from RULEKIT_TEST_POSTGRES)
    python benchmarks/scale.py --smoke     # 30 events, 1 and 2 daemons/workers: does it run

Two measurements:

**Daemons** (``rulekit run`` processes): Chatra ``chatStarted`` webhooks, each its own
conversation, are posted round robin over the daemons on 32 keep-alive connections of a raw-socket
load generator (``rawhttp.py``); each event's rule sends an autoreply to a fake Chatra on
loopback. The figure is webhooks / seconds from the first post until the fake received every
autoreply: ingest, processing and dispatch, end to end; with the daemons' CPU per webhook and
the load generator's (which must cost less than what it drives). Daemons sharing PostgreSQL hear
of each other's new work at once (``LISTEN``), not at their next poll.

**Store only** (worker processes calling the store, no HTTP, no engine): what the database allows.
Each worker process stands for one daemon and runs the store's side of one event, as the daemon
splits it into three transactions: **ingest** (inbox append with a delivery and a conversation
key — before the 200), **claim** (one inbox item, SKIP LOCKED, leased), **process** (conversation
read, held until the commit, and updated, message id, cooldown, the event's audit record with
two outbox jobs, the inbox item finished: the reads in one batch, the writes in another, as the
daemon's commit step makes them). Workers claim from the shared inbox, so an event ingested by
one worker may be processed by another, as with daemons behind a load balancer. No HTTP, no
engine: this measures what the database allows.

It also counts the database round trips per event (statements, plus BEGIN and COMMIT of each
transaction): on real hardware, with the database on another machine, round trips times the
network latency is what bounds one worker, and more workers hide that latency.

Each run uses a fresh schema (``rk_bench_…``), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rulekit.event import Conversation, Event
from rulekit.store import JobSpec, JournaledStore, open_store
from rulekit.store.cached import CachedState
from rulekit.store.lookups import Lookups
from rulekit.store.records import NewEvent

sys.path.insert(0, str(Path(__file__).parent))
from e2e import process_tree_cpu
from rawhttp import Sent, closed_loop, post_request

SECRET = "bench-secret-0123456789"
SAMPLE = Path(__file__).parents[1] / "examples" / "chatra" / "chat_started_anonymous.json"

CHANNEL = "online-chat"
CONVERSATIONS = 200
JOBS = [
    JobSpec("Greet", "autoreply", {"text": "Hi Anna! An agent will answer shortly."}, "chatra"),
    JobSpec("Ping", "telegram", {"chat_id": "-100123", "text": "Anna wrote"}, "telegram:-100123"),
]
TRACE = {"candidates": ["Greet", "Ping"], "conditions": {"Greet": [True], "Ping": [True]}}


def webhook(n: int) -> bytes:
    """A body the size of a typical Chatra webhook (about 1.5 KB)."""
    return json.dumps(
        {
            "eventName": "chatFragment",
            "n": n,
            "messages": [{"id": f"msg-{n}", "type": "client", "text": "Hello, I need help " * 4}],
            "client": {"id": f"client-{n % CONVERSATIONS}", "name": "Anna Müller"},
            "padding": "x" * 1200,
        }
    ).encode()


def ingest(store: JournaledStore, n: int) -> None:
    with store.transaction() as state:
        state.append_inbox(
            CHANNEL,
            webhook(n),
            delivery_key=f"msg-{n}",
            conversation_key=f"client-{n % CONVERSATIONS}",
        )


def claim_and_process(store: JournaledStore, owner: str) -> bool:
    """Claim one inbox item and process it; False when none was claimable."""
    with store.transaction() as state:
        items = state.claim_inbox(owner, lease=60, limit=1)
    if not items:
        return False
    item = items[0]
    n = json.loads(item.body)["n"]
    key = f"client-{n % CONVERSATIONS}"
    with store.transaction() as state:
        # as the daemon's commit step: the reads in one batch (the conversation held until the
        # commit), the writes in another
        cached = CachedState(state, hold=True)
        cached.prefetch(Lookups(conversations={(CHANNEL, key)}, messages={(CHANNEL, f"msg-{n}")}))
        conversation = cached.get_conversation(CHANNEL, key) or Conversation(
            id=f"conv-{n % CONVERSATIONS}", status="open"
        )
        cached.save_conversation(CHANNEL, key, conversation)
        cached.mark_message_seen(CHANNEL, f"msg-{n}")
        cached.flush()
        state.cooldown_until("Greet", conversation.id or "")
        state.set_cooldown("Greet", conversation.id or "", datetime.now(UTC) + timedelta(hours=1))
        event = Event(
            id=f"{CHANNEL}:msg-{n}",
            channel=CHANNEL,
            event="message",
            conversation={"id": conversation.id, "status": "open"},
            client={"id": key},
            message={"id": f"msg-{n}", "text": "Hello, I need help", "author": "client"},
        )
        state.record_events([NewEvent(event, item.id, TRACE, JOBS)])
        state.finish_inbox_items([item.id])
    return True


def worker(
    url: str, base_dir: str, index: int, events: range, start: object, results: object
) -> None:
    store = open_store(url, base_dir)
    owner = f"worker-{index}"
    transactions = 0
    start.wait()  # type: ignore[attr-defined]
    began = time.perf_counter()
    processed = 0
    for n in events:
        ingest(store, n)
        transactions += 1
        # keep up with what arrives: process what can be claimed (possibly another's events)
        while claim_and_process(store, owner):
            transactions += 2
            processed += 1
        transactions += 1
    while claim_and_process(store, owner):  # drain
        transactions += 2
        processed += 1
    transactions += 1
    elapsed = time.perf_counter() - began
    statements = getattr(store, "statements", None)
    store.close()
    results.put((index, processed, elapsed, transactions, statements))  # type: ignore[attr-defined]


def run(url: str, base_dir: str, workers: int, events: int) -> dict[str, float]:
    """Run ``workers`` processes over ``events`` events; events/s and round trips per event."""
    open_store(url, base_dir).close()  # migrate before the clock starts
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(workers + 1)
    results = context.Queue()
    shares = [range(i, events, workers) for i in range(workers)]
    processes = [
        context.Process(target=worker, args=(url, base_dir, i, shares[i], start, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    start.wait()
    began = time.perf_counter()
    outcomes = [results.get(timeout=600) for _ in processes]
    wall = time.perf_counter() - began
    for process in processes:
        process.join()
    processed = sum(o[1] for o in outcomes)
    assert processed == events, f"processed {processed} of {events} events"
    transactions = sum(o[3] for o in outcomes)
    statements = [o[4] for o in outcomes]
    round_trips = (
        (sum(statements) + 2 * transactions) / events if None not in statements else float("nan")
    )
    return {
        "events_per_s": events / wall,
        "round_trips": round_trips,
        "busiest_share": max(o[1] for o in outcomes) / events,
        "spread": statistics.pstdev(o[1] for o in outcomes) / max(events / workers, 1),
    }


def chat_started(sample: dict, n: int) -> bytes:
    """A Chatra chatStarted body for visitor ``n`` (its own conversation)."""
    body = json.loads(json.dumps(sample))
    body["message"]["id"] = f"msg{n:08d}"
    body["client"]["id"] = f"client{n:08d}"
    body["client"]["chatId"] = f"chat{n:08d}"
    body["client"]["displayedName"] = f"Visitor {n}"
    return json.dumps(body).encode()


def write_config(folder: Path, storage: str, chatra: object) -> Path:
    (folder / "rules.d").mkdir(exist_ok=True)
    (folder / "rules.d" / "rules.yaml").write_text(
        "- name: Greet\n"
        "  on: {channel: online-chat, event: created}\n"
        '  do:\n    - autoreply: {text: "Hello {{ client.display_name }}"}\n'
    )
    config = folder / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        f"storage: {storage}\n"
        "channels:\n"
        "  online-chat:\n"
        "    provider: chatra\n"
        f"    webhook_secret: {SECRET}\n"
        "    default_group: support\n"
        f"    base_url: {chatra.base_url}\n"  # type: ignore[attr-defined]
        f"    public_key: {chatra.public_key}\n"  # type: ignore[attr-defined]
        f"    secret_key: {chatra.secret_key}\n"  # type: ignore[attr-defined]
        "    default_agent_id: agent0001\n"
        "groups: [support]\n"
        "agents:\n"
        "  - {email: anna@example.com, groups: [support], channels: [online-chat]}\n"
        "logging: {level: warning}\n"
    )
    return config


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SENDERS = 32
"""Keep-alive connections posting webhooks, shared among the daemons."""


@dataclass
class Daemons:
    """What ``count`` daemons did with the webhooks."""

    rate: float
    """Webhooks per second, end to end."""
    cpu_ms: float
    """CPU of the daemons (their evaluation workers included) per webhook."""
    sender_ms: float
    """CPU of the load generator per webhook."""
    round_trips: float
    """Database round trips per webhook, as the daemons count them (0 on SQLite)."""


def settle(pids: list[int], timeout: float = 120.0) -> None:
    """Wait until the daemons are idle: a daemon answers /healthz while its evaluation worker
    still starts (imports, rules), and that start-up is not what the benchmark measures."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(process_tree_cpu(pid) for pid in pids)
        time.sleep(0.5)
        if sum(process_tree_cpu(pid) for pid in pids) - before < 0.02 * len(pids):
            return


def round_trips(port: int) -> float:
    """What a daemon's ``rulekit_store_round_trips_total`` says."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("rulekit_store_round_trips_total "):
            return float(line.split()[1])
    return 0.0


def run_daemons(
    storage: str,
    folder: Path,
    count: int,
    webhooks: int,
    senders: int = SENDERS,
    recorded: float = 1.5,
) -> Daemons:
    """Webhooks per second through ``count`` ``rulekit run`` daemons, end to end (``recorded``:
    seconds to let the last outcomes be recorded, after the autoreplies arrived)."""
    import asyncio
    import subprocess

    import httpx
    from rulekit_chatra.testing import FakeChatra

    sample = json.loads(SAMPLE.read_text())
    bodies = [chat_started(sample, n) for n in range(webhooks)]
    path = f"/webhooks/online-chat/{SECRET}"
    with FakeChatra() as chatra:
        config = write_config(folder, storage, chatra)
        ports = [free_port() for _ in range(count)]
        log = (folder / "daemons.log").open("ab")
        daemons = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rulekit.cli.main",
                    "run",
                    "--config",
                    str(config),
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            for port in ports
        ]
        try:
            for port in ports:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"a daemon did not start; see {folder}/daemons.log")
                    time.sleep(0.1)

            settle([daemon.pid for daemon in daemons])
            # raw keep-alive sockets, the webhooks round robin over the daemons: the sender
            # costs far less CPU than what it drives (an HTTP client library cost more)
            shares = [
                [post_request("127.0.0.1", port, path, body) for body in bodies[i::count]]
                for i, port in enumerate(ports)
            ]

            async def post_all() -> list[Sent]:
                return await asyncio.gather(
                    *(
                        closed_loop("127.0.0.1", port, share, max(senders // count, 1))
                        for port, share in zip(ports, shares, strict=True)
                    )
                )

            cpu = sum(process_tree_cpu(daemon.pid) for daemon in daemons)
            trips = sum(round_trips(port) for port in ports)
            began, own = time.perf_counter(), time.process_time()
            sent = asyncio.run(post_all())
            own = time.process_time() - own
            refused = sum(n for s in sent for status, n in s.statuses.items() if status != 200)
            if refused:
                raise RuntimeError(f"{refused} webhooks were not accepted")
            deadline = time.monotonic() + 600
            while len({body["clientId"] for body in chatra.sent}) < webhooks:
                if time.monotonic() > deadline:
                    arrived = len({body["clientId"] for body in chatra.sent})
                    log.flush()
                    tail = (folder / "daemons.log").read_text(errors="replace")[-6000:]
                    raise RuntimeError(
                        f"{arrived} of {webhooks} autoreplies arrived within 10 minutes;"
                        f" the daemons' log ends:\n{tail}"
                    )
                time.sleep(0.02)
            elapsed = time.perf_counter() - began
            cpu = sum(process_tree_cpu(daemon.pid) for daemon in daemons) - cpu
            time.sleep(recorded)  # the last outcomes are recorded after the autoreplies arrive
            trips = sum(round_trips(port) for port in ports) - trips
            return Daemons(
                webhooks / elapsed, cpu / webhooks * 1000, own / webhooks * 1000, trips / webhooks
            )
        finally:
            for daemon in daemons:
                daemon.terminate()
            for daemon in daemons:
                daemon.wait(30)
            log.close()


def bench_daemons(
    postgres: str | None,
    workers: list[int],
    webhooks: int,
    senders: int = SENDERS,
    recorded: float = 1.5,
) -> None:
    print(
        f"\nDaemons (rulekit run), {webhooks} webhooks end to end, {senders} at a time"
        + (" (one in flight: small rounds)" if senders == 1 else " (processed in rounds)")
    )
    print(
        f"{'store':<28} {'daemons':>7} {'events/s':>10} {'vs 1':>6} {'CPU ms/event':>13}"
        f" {'sender ms':>10} {'round trips/event':>18}"
    )

    def line(store: str, count: int, result: Daemons, ratio: str) -> None:
        print(
            f"{store:<28} {count:>7} {result.rate:>10.0f} {ratio:>6} {result.cpu_ms:>13.2f}"
            f" {result.sender_ms:>10.2f}"
            + (f" {result.round_trips:>18.1f}" if result.round_trips else f" {'(in-process)':>18}")
        )

    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run_daemons("sqlite:///rulekit.sqlite3", Path(tmp), 1, webhooks, senders, recorded)
    line("SQLite (synchronous=FULL)", 1, sqlite, "")
    if not postgres:
        print("PostgreSQL: skipped (pass --postgres URL or set RULEKIT_TEST_POSTGRES)")
        return
    from rulekit.store.postgres import drop_schema

    base = None
    for count in workers:
        separator = "&" if "?" in postgres else "?"
        url = f"{postgres}{separator}schema=rk_bench_{uuid.uuid4().hex[:10]}"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = run_daemons(url, Path(tmp), count, webhooks, senders, recorded)
        finally:
            drop_schema(url)
        base = base or result.rate
        line("PostgreSQL", count, result, f"{result.rate / base:.2f}x")
        if count == 1:
            ratio = result.rate / sqlite.rate
            print(f"{'':<28} one PostgreSQL daemon / one SQLite daemon: {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get("RULEKIT_TEST_POSTGRES"))
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="600 events per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--webhooks", type=int, default=2000, help="for the daemons (quick: 400)")
    parser.add_argument(
        "--senders",
        type=int,
        default=SENDERS,
        help="webhooks in flight at once (1: one at a time, no rounds to batch)",
    )
    parser.add_argument("--store-only", action="store_true", help="skip the daemons")
    parser.add_argument("--daemons-only", action="store_true", help="skip the store only part")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run")
    args = parser.parse_args()
    events = 600 if args.quick else args.events
    if args.smoke:
        events, args.webhooks, args.quick, args.workers = 30, 30, False, [1, 2]
    print(f"{os.cpu_count()} CPUs")
    if not args.store_only:
        webhooks = 400 if args.quick else args.webhooks
        recorded = 0.3 if args.smoke else 1.5
        bench_daemons(args.postgres, args.workers, webhooks, args.senders, recorded)
    if args.daemons_only:
        return 0
    print(f"\nStore only, {events} events per configuration")
    print(f"{'store':<28} {'workers':>7} {'events/s':>10} {'vs 1':>6} {'round trips/event':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run(f"sqlite:///{Path(tmp) / 'scale.sqlite3'}", tmp, 1, events)
        print(
            f"{'SQLite (synchronous=FULL)':<28} {1:>7} {sqlite['events_per_s']:>10.0f}"
            f" {'':>6} {'(in-process)':>18}"
        )
        if not args.postgres:
            print("PostgreSQL: skipped (pass --postgres URL or set RULEKIT_TEST_POSTGRES)")
            return 0
        from rulekit.store.postgres import drop_schema

        base = None
        for count in args.workers:
            separator = "&" if "?" in args.postgres else "?"
            url = f"{args.postgres}{separator}schema=rk_bench_{uuid.uuid4().hex[:10]}"
            try:
                figures = run(url, tmp, count, events)
            finally:
                drop_schema(url)
            base = base or figures["events_per_s"]
            print(
                f"{'PostgreSQL':<28} {count:>7} {figures['events_per_s']:>10.0f}"
                f" {figures['events_per_s'] / base:>5.2f}x {figures['round_trips']:>18.1f}"
            )
        print(
            f"PostgreSQL 1 worker vs SQLite: {base / sqlite['events_per_s']:.2f}x"  # type: ignore[operator]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
