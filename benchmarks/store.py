"""Store throughput: the daemon's per-event unit of work, in transactions per second.

    python benchmarks/store.py            # 2,000 events per store
    python benchmarks/store.py --quick    # 500 events per store
    python benchmarks/store.py --smoke    # 20 events per store: does it run

The unit of work is what processing one webhook writes, in one transaction: the inbox append,
the conversation read and update, the message id, a cooldown, the event's audit record with two
outbox jobs, and the inbox item marked done. The lifecycle row splits it as the daemon does:
ingest (inbox append, before the 200), processing (the rest), dispatch (claim the two jobs and
record their attempts) — three commits per event.

Figures are printed as transactions/s and as ratios to the in-memory store, for SQLite with
``synchronous=FULL`` (the default: an fsync per commit) and ``NORMAL`` (the opt-down), measured in
the same run on the same disk (a temporary directory; pass --dir to choose where).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rulekit.event import Conversation, Event
from rulekit.store import JobSpec, JournaledStore, MemoryStore
from rulekit.store.sqlite import SQLiteStore

CHANNEL = "online-chat"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONVERSATIONS = 200


def webhook(n: int) -> bytes:
    """A body the size of a typical Chatra webhook (about 1.5 KB)."""
    return json.dumps(
        {
            "eventName": "chatFragment",
            "messages": [{"id": f"msg-{n}", "type": "client", "text": "Hello, I need help " * 4}],
            "client": {
                "id": f"client-{n % CONVERSATIONS}",
                "name": "Anna Müller",
                "email": "anna@example.com",
                "info": {"ip": "203.0.113.7", "browser": "Firefox 126", "os": "Linux"},
                "integrationData": {"plan": "pro", "orders": list(range(20))},
            },
            "chat": {"id": f"chat-{n % CONVERSATIONS}", "page": "https://shop.example/cart" * 8},
            "padding": "x" * 600,
        }
    ).encode()


def event_for(n: int) -> Event:
    return Event(
        id=f"{CHANNEL}:msg-{n}",
        channel=CHANNEL,
        event="message",
        occurred_at=T0 + timedelta(seconds=n),
        conversation={"id": f"conv-{n % CONVERSATIONS}", "status": "open"},
        client={"id": f"client-{n % CONVERSATIONS}", "name": "Anna Müller"},
        message={"id": f"msg-{n}", "text": "Hello, I need help", "author": "client"},
    )


JOBS = [
    JobSpec("Greet", "autoreply", {"text": "Hi Anna! An agent will answer shortly."}, "chatra"),
    JobSpec("Ping", "telegram", {"chat_id": "-100123", "text": "Anna wrote"}, "telegram:-100123"),
]
TRACE = {"candidates": ["Greet", "Ping"], "conditions": {"Greet": [True], "Ping": [True]}}


def process(store: JournaledStore, n: int, inbox_id: int | None = None) -> int:
    """The processing part of one event; appends to the inbox first unless ``inbox_id``."""
    key = f"client-{n % CONVERSATIONS}"
    with store.transaction() as state:
        if inbox_id is None:
            inbox_id, _ = state.append_inbox(CHANNEL, webhook(n), delivery_key=f"msg-{n}")
        conversation = state.get_conversation(CHANNEL, key) or Conversation(
            id=f"conv-{n % CONVERSATIONS}", status="open"
        )
        conversation.assignee = f"agent{n % 5}@example.com"
        state.save_conversation(CHANNEL, key, conversation)
        state.mark_message_seen(CHANNEL, f"msg-{n}")
        state.set_cooldown("Greet", conversation.id or key, T0 + timedelta(minutes=30))
        state.record_event(event_for(n), inbox_id=inbox_id, trace=TRACE, jobs=JOBS)
        state.finish_inbox(inbox_id)
    return inbox_id


def unit_of_work(store: JournaledStore, n: int) -> int:
    process(store, n)
    return 1


def lifecycle(store: JournaledStore, n: int) -> int:
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox(CHANNEL, webhook(n), delivery_key=f"msg-{n}")
    process(store, n, inbox_id)
    with store.transaction() as state:
        for job in state.claim_jobs("bench", lease=60, limit=2):
            state.record_attempt(job.id, "done", result={"ok": True})
    return 3


def measure(open_store: Callable[[], JournaledStore], work, events: int) -> float:
    """Transactions per second of ``work`` over ``events`` events on a fresh store."""
    store = open_store()
    try:
        transactions = 0
        started = time.perf_counter()
        for n in range(events):
            transactions += work(store, n)
        return transactions / (time.perf_counter() - started)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 events instead of 2,000")
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go")
    parser.add_argument("--smoke", action="store_true", help="20 events: does it run")
    args = parser.parse_args()
    events = 20 if args.smoke else 500 if args.quick else 2000

    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        counter = iter(range(1_000_000))

        def sqlite(level: str) -> Callable[[], JournaledStore]:
            return lambda: SQLiteStore(
                Path(directory) / f"bench-{next(counter)}.sqlite3", synchronous=level
            )

        stores = {
            "memory": MemoryStore,
            "sqlite FULL": sqlite("FULL"),
            "sqlite NORMAL": sqlite("NORMAL"),
        }
        print(f"{events} events per store; files in {directory}")
        for label, work in (
            ("unit of work (1 tx/event)", unit_of_work),
            ("lifecycle (3 tx/event)", lifecycle),
        ):
            rates = {name: measure(factory, work, events) for name, factory in stores.items()}
            print(f"\n{label}")
            for name, rate in rates.items():
                ratio = rate / rates["memory"]
                print(
                    f"  {name:14} {rate:10,.0f} tx/s   {ratio:6.3f}x memory"
                    f"   {rates['sqlite FULL'] and rate / rates['sqlite FULL']:6.2f}x FULL"
                )


if __name__ == "__main__":
    main()
