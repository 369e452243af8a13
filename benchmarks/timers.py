"""Timers at scale: what 100,000 pending timers cost the store and the daemon, each figure a
ratio to a baseline measured in the same run (the same store, or the same daemon, with no
pending timers).

    python benchmarks/timers.py             # 100,000 pending timers
    python benchmarks/timers.py --quick     # 20,000, shorter daemon runs
    python benchmarks/timers.py --smoke     # 200, timers due after 1 s, short phases: does it run
    python benchmarks/timers.py --postgres postgresql://...   # also PostgreSQL (default:
                                            # RULEKIT_TEST_POSTGRES; a schema of its own, dropped)

**Store** (SQLite; PostgreSQL when given): the time of each timer operation with N pending
timers over the same operation on an empty store — setting one (``set_timer``), cancelling
one (``cancel_timers``: an index, not a scan), the earliest due time (``next_timer_due``, what
the runner reads before it sleeps) and claiming the due ones (``claim_timers``). Three shapes
of the pending timers: due far apart (spread over 30 days), all due at the same instant a
month ahead, and half of them on one conversation-heavy rule (one rule, many conversations).
An index keeps each ratio near 1; a scan makes it grow with N (~N / 1,000 here).

**Daemon** (``rulekit run``, SQLite): RSS and CPU at idle for 10 s with N pending timers
(due in a month) against the same daemon with none (no loop walks the timers: CPU ~ 0 either
way), and firing lateness under load: 300 timers set by new chats fall due at 10/s, then at
50/s (two shapes), while new chats arrive at 200/s; p50 and p99 of (fired - due) from the
timers table, against the same daemon and load with no pending timers. Target: p99 <= 1 s.

The worst ratio of each part is printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import Daemon, chat_started, percentile, write_config

from rulekit.store.base import JournaledStore
from rulekit.store.sqlite import SQLiteStore

NOW = datetime.now(UTC).replace(microsecond=0)
SHAPES = ("spread", "same instant", "one rule")
REPEAT = 200
"""Operations timed per figure (the median of them is the figure)."""


# -- the store ---------------------------------------------------------------------------------


def fill(store: JournaledStore, pending: int, shape: str) -> None:
    """``pending`` timers, none due within a week, in batches of 5,000 per transaction."""
    for start in range(0, pending, 5_000):
        with store.transaction() as state:
            for n in range(start, min(start + 5_000, pending)):
                if shape == "spread":
                    rule, due = f"rule {n % 50}", NOW + timedelta(days=7, seconds=n * 26)
                elif shape == "same instant":
                    rule, due = f"rule {n % 50}", NOW + timedelta(days=30)
                else:
                    rule = "one rule" if n % 2 else f"rule {n % 50}"
                    due = NOW + timedelta(days=7, seconds=n * 26)
                state.set_timer(rule, f"conv-{n}", "online-chat", due, f"event-{n}", now=NOW)


def operations(store: JournaledStore, tag: str) -> dict[str, Callable[[int], None]]:
    """Each timer operation, one transaction each, on conversations of this run."""

    def set_one(n: int) -> None:
        with store.transaction() as state:
            due = NOW + timedelta(days=3)
            state.set_timer("bench", f"{tag}-{n}", "online-chat", due, f"e-{tag}-{n}", now=NOW)

    def cancel_one(n: int) -> None:
        with store.transaction() as state:
            state.cancel_timers("bench", f"{tag}-{n}", by_event=f"c-{tag}-{n}", now=NOW)

    def next_due(n: int) -> None:
        with store.transaction() as state:
            state.next_timer_due()

    def claim(n: int) -> None:
        # one timer due now among the pending ones: claim it and record it fired
        with store.transaction() as state:
            state.set_timer("due", f"{tag}-due-{n}", "online-chat", NOW, f"d-{tag}-{n}", now=NOW)
            (timer,) = state.claim_timers("bench", lease=60, limit=20, now=NOW)
            state.finish_timer(timer.id, "bench", "fired", at=NOW)

    return {"set": set_one, "cancel": cancel_one, "next due": next_due, "claim": claim}


def compare(
    empty: JournaledStore, full: JournaledStore, repeat: int = REPEAT
) -> dict[str, tuple[float, float]]:
    """Median milliseconds of each operation on ``full`` and on ``empty``, run alternately
    (one on each, then the next) so that the machine's noise falls on both alike."""
    ops_empty, ops_full = operations(empty, "a"), operations(full, "b")
    out = {}
    for name in ops_empty:
        times: tuple[list[float], list[float]] = ([], [])
        for n in range(repeat):
            for side, op in enumerate((ops_full[name], ops_empty[name])):
                start = time.perf_counter()
                op(n)
                times[side].append(time.perf_counter() - start)
        medians = [sorted(t)[len(t) // 2] * 1000 for t in times]
        out[name] = (medians[0], medians[1])
    return out


def bench_store(
    name: str, open_store: Callable[[str], JournaledStore], pending: int, repeat: int = REPEAT
) -> float:
    print(f"\n{name}: median ms per operation with {pending:,} pending timers (ratio to none)")
    worst = 0.0
    for shape in SHAPES:
        empty = open_store(f"{shape}-empty")
        full = open_store(f"{shape}-full")
        try:
            fill(full, pending, shape)
            started = time.perf_counter()
            figures = compare(empty, full, repeat)
            took = time.perf_counter() - started
        finally:
            empty.close()
            full.close()
        cells = []
        for op, (loaded, base) in figures.items():
            ratio = loaded / base if base else float("inf")
            worst = max(worst, ratio)
            cells.append(f"{op} {loaded:.3f} ({ratio:.2f}x)")
        print(f"  {shape:>12}: " + ", ".join(cells) + f"   [{took:.1f} s]")
    print(f"  worst ratio: {worst:.2f}x")
    return worst


# -- the daemon --------------------------------------------------------------------------------

TIMED = "Nobody answered"


def timed_rules(after: float) -> str:
    """A rule whose timer falls due ``after`` seconds after a chat with ``timer`` began, and
    one for the chats of the load."""
    return f"""\
- name: {TIMED}
  on: {{channel: online-chat, event: created}}
  if: "message.text == 'timer'"
  after: {after:g}s
  do:
    - play_sound: {{sound: bell, to: everyone}}

- name: Bell for new chats
  on: {{channel: online-chat, event: created}}
  if: "message.text == 'load'"
  do:
    - play_sound: {{sound: bell, to: everyone}}
"""


@dataclass
class Phases:
    """How long the daemon's phases last (seconds)."""

    after: float = 30.0
    """From a chat to its timer's due time."""
    settle: float = 2.0
    """After the daemon's start, before the measures."""
    idle: float = 10.0
    lead: float = 2.0
    """The load starts this long before the first timer is due..."""
    tail: float = 3.0
    """... and ends this long after the last."""


def setup(folder: Path, pending: int, after: float = 30.0) -> Path:
    config = write_config(folder, timed_rules(after), extra="dispatcher: {max_attempts: 1}\n")
    store = SQLiteStore(folder / "rulekit.sqlite3")
    try:
        fill(store, pending, "spread")
    finally:
        store.close()
    return config


def new_chat(conversation: int, text: str) -> bytes:
    """A new chat, written now (its timer counts from the message's time)."""
    body = json.loads(chat_started(conversation, f"m-{conversation}"))
    body["message"]["createdAt"] = int(time.time() * 1000)
    body["message"]["text"] = text
    return json.dumps(body).encode()


async def send(url: str, rate: float, seconds: float, first: int, text: str) -> int:
    """POST a new chat every 1/rate s for ``seconds``; how many were accepted."""
    accepted = 0
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            nonlocal accepted
            async with session.post(url, data=new_chat(n, text)) as response:
                accepted += response.status == 200

        tasks = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(first + n)))
        await asyncio.gather(*tasks)
    return accepted


def timer_rows(folder: Path, since: datetime) -> list[tuple[datetime, datetime | None]]:
    """(due, fired) of the timers the benchmark's rule set since ``since``."""
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        rows = conn.execute(
            "SELECT due, finished_at, set_at FROM timers WHERE rule = ?", (TIMED,)
        ).fetchall()
    finally:
        conn.close()
    return [
        (datetime.fromisoformat(due), datetime.fromisoformat(done) if done else None)
        for due, done, set_at in rows
        if datetime.fromisoformat(set_at) >= since
    ]


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


def lateness_under_load(
    folder: Path,
    daemon: Daemon,
    timers: int,
    timer_rate: float,
    load_rate: float,
    first: int,
    phases: Phases,
) -> dict[str, float]:
    """``timers`` chats that each set a timer due ``phases.after`` (30 s) after they were
    written (``timer_rate`` a second, so they fall due at that rate), then new chats at
    ``load_rate`` a second from ``phases.lead`` (2 s) before the first timer is due to
    ``phases.tail`` (3 s) after the last: p50 and p99 of (fired - due)."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    sent = asyncio.run(send(daemon.webhook_url, timer_rate, timers / timer_rate, first, "timer"))
    wait_until(lambda: len(timer_rows(folder, since)) >= sent, 60)
    dues = [due for due, _ in timer_rows(folder, since)]
    wait = (min(dues) - datetime.now(UTC)).total_seconds() - phases.lead
    time.sleep(max(wait, 0))
    seconds = (max(dues) - datetime.now(UTC)).total_seconds() + phases.tail
    loaded = asyncio.run(send(daemon.webhook_url, load_rate, seconds, first + 500_000, "load"))
    wait_until(lambda: all(done for _, done in timer_rows(folder, since)), 60)
    late = [
        (done - due).total_seconds() if done else float("inf")
        for due, done in timer_rows(folder, since)
    ]
    return {
        "p50": percentile(late, 50),
        "p99": percentile(late, 99),
        "timers": len(late),
        "load": loaded / seconds,
        "set late": float(wait < 0),
    }


def run_daemon(
    folder: Path, config: Path, phases: Phases, timers: int, shapes: list[float], load_rate: float
) -> dict[str, Any]:
    daemon = Daemon(config).wait_ready()
    try:
        time.sleep(phases.settle)
        cpu, rss = daemon.cpu_seconds(), daemon.rss_mb()
        time.sleep(phases.idle)
        idle_cpu = (daemon.cpu_seconds() - cpu) / phases.idle
        out: dict[str, Any] = {"rss": rss, "idle_cpu": idle_cpu}
        for n, timer_rate in enumerate(shapes):
            out[f"{timer_rate:g}"] = lateness_under_load(
                folder, daemon, timers, timer_rate, load_rate, 1 + n * 10_000, phases
            )
        return out
    finally:
        daemon.stop()


def bench_daemon(
    pending: int, phases: Phases, timers: int, shapes: list[float], rate: float
) -> float:
    print(f"\ndaemon (rulekit run, SQLite): {pending:,} pending timers vs none (ratio)")
    results: dict[int, dict[str, Any]] = {}
    for count in (0, pending):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = setup(folder, count, phases.after)
            results[count] = run_daemon(folder, config, phases, timers, shapes, rate)
    base, full = results[0], results[pending]
    worst = full["rss"] / base["rss"]
    print(f"  {'RSS when idle, MB':>34}: {full['rss']:.1f} vs {base['rss']:.1f} ({worst:.2f}x)")
    print(
        f"  {'CPU at idle, s per s':>34}: {full['idle_cpu']:.4f} vs {base['idle_cpu']:.4f}"
        " (no ratio: both near zero)"
    )
    met = True
    for shape in (f"{rate:g}" for rate in shapes):
        for key in ("p50", "p99"):
            ratio = full[shape][key] / base[shape][key] if base[shape][key] else float("nan")
            worst = max(worst, ratio)
            label = f"lateness {key}, {shape} timers/s due, s"
            print(f"  {label:>34}: {full[shape][key]:.3f} vs {base[shape][key]:.3f} ({ratio:.2f}x)")
        met = met and full[shape]["p99"] <= 1
        print(
            f"  {'':>34}  {full[shape]['timers']:.0f} timers, webhooks at "
            f"{full[shape]['load']:.0f}/s (none pending: {base[shape]['load']:.0f}/s)"
        )
    print(f"  target p99 <= 1 s at every shape: {'met' if met else 'NOT met'}")
    print(f"  worst ratio (RSS, lateness): {worst:.2f}x")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pending", type=int)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--postgres", default=os.environ.get("RULEKIT_TEST_POSTGRES"))
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, short phases")
    args = parser.parse_args()
    pending = args.pending or (200 if args.smoke else 20_000 if args.quick else 100_000)
    repeat = 5 if args.smoke else REPEAT
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        worst["SQLite store"] = bench_store(
            "SQLite store (synchronous=NORMAL: the commit's fsync is the same either way)",
            lambda name: SQLiteStore(Path(tmp) / f"{name}.sqlite3", synchronous="NORMAL"),
            pending,
            repeat,
        )
    if args.postgres:
        from rulekit.store.postgres import PostgresStore, drop_schema

        separator = "&" if "?" in args.postgres else "?"
        urls: list[str] = []

        def open_postgres(name: str) -> JournaledStore:
            url = f"{args.postgres}{separator}schema=rk_bench_{uuid.uuid4().hex[:10]}"
            urls.append(url)
            return PostgresStore(url)

        try:
            worst["PostgreSQL store"] = bench_store(
                "PostgreSQL store", open_postgres, pending, repeat
            )
        finally:
            for url in urls:
                drop_schema(url)
    else:
        print("\nPostgreSQL: skipped (pass --postgres URL or set RULEKIT_TEST_POSTGRES)")
    if not args.skip_daemon:
        if args.smoke:
            phases, timers = Phases(after=1, settle=0.3, idle=0.3, lead=0.2, tail=0.3), 5
            args.rate = 20
        else:
            phases, timers = Phases(idle=5.0 if args.quick else 10.0), 100 if args.quick else 300
        worst["daemon"] = bench_daemon(pending, phases, timers, [10.0, 50.0], args.rate)
    print("\nworst ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in worst.items()))


if __name__ == "__main__":
    main()
