"""Cost as rules grow: `rulekit run` with 1, 1,000 and 10,000 rules in the event's bucket, all
but one excluded by the rule index, driven the same way in one run.

    python benchmarks/rules_cost.py               # 1, 1,000 and 10,000 rules
    python benchmarks/rules_cost.py --quick       # fewer webhooks
    python benchmarks/rules_cost.py --rules 1 2000 20000
    python benchmarks/rules_cost.py --smoke       # 1 and 20 rules, 200 webhooks: does it run

The rules are those of ``e2e.py --rules N``: one that matches every webhook (a Slack message
each, to a channel of its own) and N - 1 of the same channel and events whose condition names
a client no webhook comes from. Printed for each rule count:

* **CPU per webhook** of the daemon's processes (the evaluation workers included) while
  ``--webhooks`` webhooks are posted by 64 keep-alive connections as fast as they are
  acknowledged, and as a ratio to 1 rule (targets: <= 1.5x at 1,000, <= 2x at 10,000);
* **memory** of the daemon's processes (the main process, the worker's fork server, the
  multiprocessing resource tracker and the evaluation workers), sampled every 50 ms: the main
  process's RSS, the sum of the processes' RSS (pages a worker shares with its fork server
  counted twice) and the sum of their PSS (what they use together), highest while the rules
  load (until the worker, which compiles them, answered) and under that traffic (target: the
  PSS sum <= 200 MB at 10,000 rules);
* **the trace stored per event**: its mean size in the store, to show the excluded rules are
  only counted in it.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from e2e import CONNECTIONS, Slack, phase, start_rulekit
from rawhttp import closed_loop


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(current)
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS of a process in MB (0, 0 once it is gone). PSS counts a page shared by n
    processes as 1/n of it, so the PSS of the daemon's processes add up to what they use
    together; their RSS counts the pages a worker shares with its fork server twice."""
    rss = pss = 0.0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return rss, pss


@dataclass
class Peak:
    """The highest memory figures seen: the main process's RSS, the sum of the processes' RSS
    and the sum of their PSS."""

    main: float = 0.0
    rss: float = 0.0
    pss: float = 0.0

    def cells(self) -> str:
        return f"{self.main:>6.0f} {self.rss:>6.0f} {self.pss:>6.0f}"


class MemorySampler:
    """The peaks of a process tree's memory, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, Peak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            sizes = [memory_mb(pid) for pid in process_tree(self.pid)]
            main = memory_mb(self.pid)[0]
            self.peak = Peak(
                max(self.peak.main, main),
                max(self.peak.rss, sum(rss for rss, _ in sizes)),
                max(self.peak.pss, sum(pss for _, pss in sizes)),
            )

    def stop(self) -> Peak:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Figures:
    rules: int
    load_s: float = 0.0
    cpu_ms: float = 0.0
    loadgen_ms: float = 0.0
    lost: int = 0
    loading: Peak = field(default_factory=Peak)
    traffic: Peak = field(default_factory=Peak)
    processes: int = 0
    trace_bytes: float = 0.0


def measure(
    rules: int, slack: Slack, webhooks: int, conversations: int, warm: int = 300
) -> Figures:
    out = Figures(rules)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samplers: list[MemorySampler] = []
        began = time.monotonic()
        server = start_rulekit(
            folder, slack.url, rules, lambda pid: samplers.append(MemorySampler(pid))
        )
        out.load_s = time.monotonic() - began
        try:
            # loading ends once the evaluation worker, which loads the rules itself, answered
            slack.arrived.clear()
            warming = phase("w", warm, 50, server.port)
            asyncio.run(closed_loop("127.0.0.1", server.port, warming.requests, 16))
            slack.wait(warming.ids)
            out.loading = samplers[0].stop()

            load = phase("t", webhooks, conversations, server.port)
            sampler = MemorySampler(server.proc.pid)
            cpu, own = server.cpu(), time.process_time()
            asyncio.run(closed_loop("127.0.0.1", server.port, load.requests, CONNECTIONS))
            own = time.process_time() - own
            arrived = slack.wait(load.ids)
            cpu = server.cpu() - cpu
            out.traffic = sampler.stop()
            out.processes = len(process_tree(server.proc.pid))
            out.lost = len(load.ids) - len(arrived)
            out.cpu_ms = cpu / webhooks * 1000
            out.loadgen_ms = own / webhooks * 1000
        finally:
            server.stop()
        with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
            (size,) = conn.execute("SELECT avg(length(trace)) FROM events").fetchone()
        out.trace_bytes = size or 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,500 webhooks per rule count")
    parser.add_argument("--webhooks", type=int, default=4000)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--rules", type=int, nargs="+", default=[1, 1000, 10_000])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it run")
    args = parser.parse_args()
    warm = 300
    if args.quick:
        args.webhooks = 1500
    if args.smoke:
        # enough webhooks for the CPU figures to count clock ticks (10 ms each)
        args.webhooks, args.conversations, args.rules, warm = 200, 10, [1, 20], 10
    slack = Slack()
    try:
        results = [measure(n, slack, args.webhooks, args.conversations, warm) for n in args.rules]
    finally:
        slack.stop()
    one = results[0]
    print(
        f"{args.webhooks} webhooks as fast as acknowledged ({CONNECTIONS} connections) per rule "
        f"count; all rules but one excluded by the index; memory in MB over the daemon's processes"
    )
    print(
        f"{'':34} {'peak while loading':>20} {'peak under traffic':>20}\n"
        f"{'rules':>7} {'load s':>6} {'CPU ms/wh':>9} {'ratio':>6} "
        f"{'main':>6} {'RSS':>6} {'PSS':>6} {'main':>6} {'RSS':>6} {'PSS':>6} "
        f"{'procs':>5} {'trace B':>7} {'loadgen ms':>10}"
    )
    for r in results:
        ratio = r.cpu_ms / one.cpu_ms if one.cpu_ms else 0.0
        print(
            f"{r.rules:>7,} {r.load_s:>6.1f} {r.cpu_ms:>9.2f} {ratio:>5.2f}x "
            f"{r.loading.cells()} {r.traffic.cells()} {r.processes:>5} {r.trace_bytes:>7.0f} "
            f"{r.loadgen_ms:>10.2f}"
        )
        if r.lost:
            print(f"  {r.lost} messages missing after the throughput phase")
    print("targets: CPU <= 1.5x at 1,000 rules, <= 2x at 10,000; PSS <= 200 MB at 10,000")


if __name__ == "__main__":
    main()
