"""Cost as history grows: the same work on a SQLite store with 1,000 recorded events and on one
seeded with 1,000,000 (their inbox items and done jobs), 100,000 pending future-dated jobs and
100,000 conversations, measured in one run.

    python benchmarks/history.py                  # 1,000,000 events (seeding takes a minute or two)
    python benchmarks/history.py --events 200000 --quick
    python benchmarks/history.py --smoke          # 20 events against 200, one turn: does it run

Printed for each store, and as ratios large / small (target: within 1.2x), the median of
``--rounds`` turns taken alternately on each store:

* **store calls** (in process, median of repeated runs): ingest (an inbox append and its
  commit), the processor's claim of the inbox, the dispatcher's claim of due jobs (none is due:
  the 100,000 pending jobs wait for a retry), the console's list of conversations (first page)
  and a conversation's view (an old conversation, found by index), a retention purge with
  nothing to purge;
* **the daemon** (``rulekit run`` on the store, driven as ``e2e.py`` drives it): CPU per
  webhook and ack p99 at a fixed offered rate.

The store is seeded by bulk insert: a thousand events are recorded through the store, then
copied in SQL, so every row has the shape the store writes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import SECRET, chat_fragment, chat_started, percentile
from e2e import Slack, start_rulekit
from rawhttp import closed_loop, open_loop, post_request

from rulekit.audit import retention
from rulekit.config import RetentionSettings
from rulekit.directory import Directory
from rulekit.event import Conversation, Event
from rulekit.server.console import conversations
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.team import TeamView
from rulekit.store.listing import ConversationQuery
from rulekit.store.records import JobSpec
from rulekit.store.sqlite import SQLiteStore

CHANNEL = "online-chat"
ADMIN = TeamView(Viewer(None, None, admin=True), Directory([], []))
"""The console's admin, who sees every agent: the view the console builds for them."""
TEMPLATE = 1000
"""Events recorded through the store, then copied."""
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


# seeding ------------------------------------------------------------------------------------
def seed(path: Path, events: int, pending: int, template: int = TEMPLATE) -> None:
    """``events`` recorded events (one done job and one done inbox item each), ``pending``
    future-dated pending jobs, a conversation per ten events; ``template`` of them recorded
    through the store."""
    store = SQLiteStore(path)
    with store.transaction() as state:
        for n in range(template):
            inbox_id, _ = state.append_inbox(
                CHANNEL, chat_fragment(n, f"seed{n}"), delivery_key=f"seed:{n}", now=LONG_AGO
            )
            state.finish_inbox(inbox_id)
            conversation = Conversation(id=f"{CHANNEL}:seed{n}", status="open")
            state.save_conversation(CHANNEL, f"seed{n}", conversation)
            event = Event(
                id=f"{CHANNEL}:seed{n}",
                channel=CHANNEL,
                event="message",
                occurred_at=LONG_AGO,
                conversation=conversation,
                client={"id": f"seed{n}", "name": f"Client {n}"},
                message={"id": f"seed{n}", "text": "Hello, I need help with my order"},
            )
            job = JobSpec("Notify", "slack", {"channel": f"C{n}", "text": f"new {n}"}, f"C{n}")
            state.record_event(event, inbox_id=inbox_id, trace={}, jobs=[job], now=LONG_AGO)
    with store.transaction() as state:
        for job in state.jobs(status="pending", limit=template):
            state.record_attempt(job.id, "done", now=LONG_AGO)
    store.close()
    conn = sqlite3.connect(path)
    copies = max(events // template - 1, 0)
    spread = max(events // 10 // template, 1)
    """Copies of each template conversation: ten events each."""
    with conn:
        conn.execute(
            "CREATE TEMP TABLE copies AS WITH RECURSIVE m(n) AS (SELECT 1 UNION ALL"
            f" SELECT n + 1 FROM m WHERE n < {copies}) SELECT n FROM m"
        )
        # old items' bodies are emptied by retention long before their records go
        _copy(conn, "inbox", {"delivery_key": "delivery_key || '#' || copies.n", "body": "X''"})
        _copy(
            conn,
            "events",
            {
                "event_id": "event_id || '#' || copies.n",
                "conversation_id": f"conversation_id || '#' || (copies.n % {spread})",
                "inbox_id": "NULL",
            },
        )
        _copy(conn, "outbox", {"event_id": "event_id || '#' || copies.n"})
        _copy(
            conn,
            "conversations",
            {"key": "key || '#' || copies.n", "id": "id || '#' || copies.n"},
            where=f"copies.n <= {spread}",
        )
        due = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="microseconds")
        conn.execute(
            "INSERT INTO outbox (event_id, rule, action, params, destination, lane, status,"
            " next_attempt_at) SELECT event_id, 'Retry', 'slack', '{}', 'slack:retry',"
            f" 'slack:retry:' || id, 'pending', '{due}' FROM events ORDER BY id LIMIT {pending}"
        )
    conn.close()


def _copy(
    conn: sqlite3.Connection, table: str, changed: dict[str, str], where: str = "1 = 1"
) -> None:
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})") if row[1] != "id"]
    values = [changed.get(column, column) for column in columns]
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"
        f" FROM {table}, copies WHERE {where}"
    )


# in-process timings -----------------------------------------------------------------------
def median_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def store_calls(path: Path, runs: int) -> dict[str, float]:
    store = SQLiteStore(path)
    counter = iter(range(10**9))
    settings = RetentionSettings(events=timedelta(days=3650), payloads=timedelta(days=3650))

    def ingest() -> None:
        n = next(counter)
        with store.transaction() as state:
            state.append_inbox(CHANNEL, chat_started(n, f"h{n}"), delivery_key=f"h:{n}")

    def claim(which: str) -> Callable[[], object]:
        def run() -> object:
            with store.transaction() as state:
                if which == "inbox":
                    return state.claim_inbox("bench", lease=0.001, limit=16)
                return state.claim_jobs("bench", lease=0.001, limit=64)

        return run

    def listing() -> object:
        with store.reading() as state:
            return conversations.list_page(state, ConversationQuery(limit=50), ADMIN)

    def view() -> object:
        with store.reading() as state:
            found = conversations.view(state, f"{CHANNEL}:seed7", [CHANNEL], ADMIN)
        assert found is not None
        return found

    try:
        return {
            "ingest (append + commit)": median_ms(ingest, runs),
            "claim inbox": median_ms(claim("inbox"), runs),
            "claim due jobs": median_ms(claim("outbox"), runs),
            "console: list conversations": median_ms(listing, runs),
            "console: a conversation's view": median_ms(view, runs),
            "retention purge (nothing due)": median_ms(
                lambda: retention.purge(store, settings), max(runs // 10, 3)
            ),
        }
    finally:
        store.close()


# the daemon ---------------------------------------------------------------------------------
def daemon_figures(
    folder: Path, webhooks: int, rate: float, seconds: float, turn: int = 0, warm: int = 300
) -> dict[str, float]:
    """CPU per webhook and ack p99 of ``rulekit run`` on the store in ``folder`` (``turn``
    keeps each turn's message ids its own: a redelivered one would not be sent again)."""
    slack = Slack()
    server = start_rulekit(folder, slack.url, 1)
    try:
        path = f"/webhooks/online-chat/{SECRET}"

        def requests(tag: str, count: int) -> tuple[list[str], list[bytes]]:
            tag = f"{tag}{turn}-"
            ids = [f"{tag}{n:08d}" for n in range(count)]
            chats = [hash((tag, n % 500)) & 0xFFFFFFF for n in range(count)]
            bodies = [
                (chat_started if n < 500 else chat_fragment)(chat, m)
                for n, (chat, m) in enumerate(zip(chats, ids, strict=True))
            ]
            return ids, [post_request("127.0.0.1", server.port, path, b) for b in bodies]

        ids, warming = requests("w", warm)
        asyncio.run(closed_loop("127.0.0.1", server.port, warming, 16))
        slack.wait(ids)
        ids, load = requests("t", webhooks)
        cpu = server.cpu()
        asyncio.run(closed_loop("127.0.0.1", server.port, load, 64))
        slack.wait(ids)
        cpu = server.cpu() - cpu
        ids, paced = requests("l", int(rate * seconds))
        sent = asyncio.run(open_loop("127.0.0.1", server.port, paced, rate))
        slack.wait(ids)
        return {
            "daemon: CPU per webhook, ms": cpu / webhooks * 1000,
            f"daemon: ack p99 at {rate:g}/s, ms": percentile(sent.ack_latencies(), 99) * 1000,
        }
    finally:
        server.stop()
        slack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="fewer runs and webhooks")
    parser.add_argument("--no-daemon", action="store_true", help="store calls only")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of each store (medians are printed)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one turn: does it run")
    args = parser.parse_args()
    runs = 30 if args.quick else 100
    webhooks, rate, seconds = (1000, 100, 4) if args.quick else (3000, 150, 8)
    template, warm = TEMPLATE, 300
    if args.smoke:
        args.events, args.pending, args.rounds, template = 200, 50, 1, 20
        runs, webhooks, rate, seconds, warm = 3, 100, 20, 0.5, 10
    with tempfile.TemporaryDirectory() as tmp:
        empty, seeded = Path(tmp) / "empty", Path(tmp) / "seeded"
        for folder in (empty, seeded):
            folder.mkdir()
        seed(empty / "rulekit.sqlite3", template, 0, template)
        began = time.perf_counter()
        seed(seeded / "rulekit.sqlite3", args.events, args.pending, template)
        size = (seeded / "rulekit.sqlite3").stat().st_size / 2**20
        print(
            f"seeded {args.events:,} events, {args.pending:,} pending jobs in"
            f" {time.perf_counter() - began:.0f} s ({size:.0f} MiB)"
        )
        rounds: dict[str, list[dict[str, float]]] = {"empty": [], "seeded": []}
        for round_ in range(args.rounds):
            # the two stores in turns, in alternating order: a busy spell of the machine
            # weighs on both alike; each figure is the median of its rounds
            order = [("empty", empty), ("seeded", seeded)][:: 1 if round_ % 2 == 0 else -1]
            for name, folder in order:
                # measured on a copy: the daemon then starts from the same store
                work = Path(tmp) / f"calls-{name}.sqlite3"
                shutil.copy(folder / "rulekit.sqlite3", work)
                figures = store_calls(work, runs)
                work.unlink()
                if not args.no_daemon:
                    figures |= daemon_figures(folder, webhooks, rate, seconds, round_, warm)
                rounds[name].append(figures)
        results = {
            name: {key: statistics.median(r[key] for r in measured) for key in measured[0]}
            for name, measured in rounds.items()
        }
    print(f"{'':<38} {template:>9,} {args.events:>9,} {'ratio':>7}")
    for key, value in results["empty"].items():
        other = results["seeded"][key]
        print(f"{key:<38} {value:>9.2f} {other:>9.2f} {other / value if value else 0:>6.2f}x")


if __name__ == "__main__":
    main()
