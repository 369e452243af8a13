"""End to end against the practical limit: `rulekit run` and a hand-written minimal pipeline
on the same stack, driven the same way in the same run, webhook in → message at a fake Slack.

    python benchmarks/e2e.py                    # about a minute
    python benchmarks/e2e.py --quick            # fewer webhooks, shorter latency phase
    python benchmarks/e2e.py --smoke            # 200 webhooks, no profile: does it run
    python benchmarks/e2e.py --webhooks 20000 --rate 400 --seconds 30 --rules 1000

Both systems receive Chatra ``chatStarted`` / ``chatFragment`` webhooks and post one
``chat.postMessage`` per webhook to the same fake Slack, each to a channel of its own (so the
one-message-a-second pacing of a Slack channel is not what limits). The baseline
(``baseline_pipeline.py``) is uvicorn + starlette → one group-committed SQLite insert (WAL,
``synchronous=FULL``) → one trivial condition → an aiohttp post. The daemon is ``rulekit run``
on SQLite (``synchronous=FULL``) with one rule (``--rules N`` adds N - 1 rules of the same
bucket that the rule index excludes).

Printed for each, and as ratios daemon / baseline:

* **throughput**: ``--webhooks`` posted by 64 keep-alive connections as fast as they are
  acknowledged; webhooks / seconds from the first post until the fake received the last
  message (target: the daemon >= 0.5x the baseline);
* **CPU per webhook** of the server's processes (the daemon's evaluation workers included)
  over that phase (target: <= 2x the baseline's);
* **latency** at a fixed offered rate (``--rate``, open loop): ack p99 and webhook → message
  at the fake p99 (targets at 250/s: 50 ms and 100 ms);
* the **CPU by thread** of each over the throughput phase (from ``/proc``): the event loop's
  thread, the process's other threads (the daemon's processor and store threads), its child
  processes (the daemon's evaluation workers);
* the **CPU split by layer** of the daemon, from py-spy samples of its processes in a separate
  phase (skipped when py-spy is not installed: ``pip install py-spy``; it needs ptrace). These
  are samples of threads holding their process's GIL: time a thread spends inside SQLite or a
  system call is not sampled, and an evaluation worker, with a GIL of its own, always is; the
  split by thread is what the CPU per webhook is made of.

The load generator and the fake Slack are raw asyncio sockets (``rawhttp.py``); the load
generator's own CPU per webhook is printed, to show it costs less than what it drives.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import SECRET, chat_fragment, chat_started, free_port, percentile
from rawhttp import Sent, closed_loop, fake_slack, open_loop, post_request

HERE = Path(__file__).parent
TOKEN = "xoxb-bench"
CONNECTIONS = 64
RULE = """\
- name: Notify
  on: {channel: online-chat, event: [created, message]}
  do:
    - slack: {channel: "C{{ message.id }}", text: "new {{ message.id }}"}
"""
EXCLUDED = """\
- name: Other {n}
  on: {{channel: online-chat, event: [created, message]}}
  if: client.id == "nobody-{n}"
  do:
    - slack: {{channel: "C{n}", text: "other {n}"}}
"""


# the systems under test ----------------------------------------------------------------------
def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s main thread (the event loop), of its other threads (those that
    ended included) and of its descendants (the daemon's evaluation workers)."""
    try:
        whole = _cpu_seconds(Path(f"/proc/{pid}/stat"))
        main = _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {
        "event loop thread": main,
        "other threads": whole - main,
        "child processes": process_tree_cpu(pid) - whole,
    }


class Server:
    def __init__(
        self,
        name: str,
        command: list[str],
        port: int,
        started: Callable[[int], object] | None = None,
    ) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE)
        if started is not None:  # told the pid before the server is ready (to watch it load)
            started(self.proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{name} did not become ready")

    def cpu(self) -> float:
        return process_tree_cpu(self.proc.pid)

    def cpu_by_thread(self) -> dict[str, float]:
        return cpu_by_thread(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_rulekit(
    folder: Path, slack_url: str, rules: int, started: Callable[[int], object] | None = None
) -> Server:
    (folder / "rules.d").mkdir(exist_ok=True)  # (history.py starts it again on a store)
    (folder / "rules.d" / "rules.yaml").write_text(RULE)
    for start in range(1, rules, 1000):  # files of a thousand rules (a file's size is capped)
        extra = "".join(EXCLUDED.format(n=n) for n in range(start, min(rules, start + 1000)))
        (folder / "rules.d" / f"excluded-{start:06d}.yaml").write_text(extra)
    config = folder / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        "storage: sqlite:///rulekit.sqlite3\n"
        "logging: {level: warning}\n"
        "channels:\n"
        "  online-chat:\n"
        "    provider: chatra\n"
        f"    webhook_secret: {SECRET}\n"
        "integrations:\n"
        "  slack:\n"
        f"    token: {TOKEN}\n"
        f"    base_url: {slack_url}\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "rulekit.cli.main", "run", "--config", str(config)]
    return Server("rulekit", [*command, "--port", str(port), "--no-watch"], port, started)


def start_baseline(folder: Path, slack_url: str) -> Server:
    port = free_port()
    script = str(HERE / "baseline_pipeline.py")
    database = str(folder / "baseline.sqlite3")
    return Server("baseline", [sys.executable, script, str(port), slack_url, database], port)


# the load -----------------------------------------------------------------------------------
@dataclass
class Phase:
    ids: list[str]
    requests: list[bytes]


def phase(tag: str, count: int, conversations: int, port: int) -> Phase:
    """``count`` webhooks over ``conversations`` conversations (the first webhook of each
    starts the chat, the others are messages), with message ids unique to the phase."""
    path = f"/webhooks/online-chat/{SECRET}"
    ids, requests, started = [], [], set()
    for n in range(count):
        conversation = n % conversations
        message = f"{tag}{n:08d}"
        chat = hash((tag, conversation)) & 0xFFFFFFF
        body = (
            chat_fragment(chat, message) if conversation in started else chat_started(chat, message)
        )
        started.add(conversation)
        ids.append(message)
        requests.append(post_request("127.0.0.1", port, path, body))
    return Phase(ids, requests)


class Slack:
    """The fake Slack's child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/"
        context = multiprocessing.get_context("spawn")
        self.control, child = context.Pipe()
        self.proc = context.Process(target=fake_slack, args=(self.port, child), daemon=True)
        self.proc.start()
        child.close()  # so that a fake dying before it is ready ends the wait (EOFError)
        assert self.control.recv() == "ready"
        self.arrived: dict[str, float] = {}

    def wait(self, ids: list[str], timeout: float = 120) -> dict[str, float]:
        """Arrival times of the messages for ``ids`` (those that came within ``timeout``)."""
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while True:
            self.control.send("take")
            for text, at in self.control.recv():
                self.arrived.setdefault(text.removeprefix("new "), at)
            if wanted <= self.arrived.keys() or time.monotonic() > deadline:
                return {i: self.arrived[i] for i in ids if i in self.arrived}
            time.sleep(0.05)

    def stop(self) -> None:
        self.control.send("stop")
        self.proc.join(10)


@dataclass
class Result:
    throughput: float = 0.0
    cpu_ms: float = 0.0
    rate_cpu_ms: float = 0.0
    """CPU ms per webhook at the fixed offered rate (the latency phase): what a daemon that is
    not saturated spends, its rounds and commits shared by fewer webhooks."""
    lost: int = 0
    ack_p99: float = 0.0
    e2e_p50: float = 0.0
    e2e_p99: float = 0.0
    late: int = 0
    loadgen_ms: float = 0.0
    split: dict[str, float] | None = None
    threads: dict[str, float] | None = None
    """CPU ms per webhook of the throughput phase by thread (:func:`cpu_by_thread`)."""


def run_system(server: Server, slack: Slack, args: argparse.Namespace, profile: bool) -> Result:
    result = Result()
    slack.arrived.clear()
    warm = phase("w", args.warm, 50, server.port)
    asyncio.run(closed_loop("127.0.0.1", server.port, warm.requests, 16))
    slack.wait(warm.ids)

    # throughput: as fast as acknowledged, until the last message arrived
    load = phase("t", args.webhooks, args.conversations, server.port)
    cpu, own, threads = server.cpu(), time.process_time(), server.cpu_by_thread()
    sent = asyncio.run(closed_loop("127.0.0.1", server.port, load.requests, CONNECTIONS))
    own = time.process_time() - own
    arrived = slack.wait(load.ids)
    cpu = server.cpu() - cpu
    after = server.cpu_by_thread()
    result.threads = {
        part: (after[part] - before) / args.webhooks * 1000
        for part, before in threads.items()
        if part in after
    }
    result.lost = len(load.ids) - len(arrived)
    if arrived:
        result.throughput = len(arrived) / (max(arrived.values()) - min(sent.sent))
    result.cpu_ms = cpu / args.webhooks * 1000
    result.loadgen_ms = own / args.webhooks * 1000

    # latency at a fixed offered rate
    count = int(args.rate * args.seconds)
    load = phase("l", count, args.conversations, server.port)
    cpu = server.cpu()
    sent = asyncio.run(open_loop("127.0.0.1", server.port, load.requests, args.rate))
    arrived = slack.wait(load.ids)
    result.rate_cpu_ms = (server.cpu() - cpu) / count * 1000
    result.ack_p99 = percentile(sent.ack_latencies(), 99) * 1000
    e2e = [
        (arrived[m] - s) * 1000 for m, s in zip(load.ids, sent.sent, strict=True) if m in arrived
    ]
    result.late = count - len(e2e) + statuses_failed(sent)
    result.e2e_p50, result.e2e_p99 = percentile(e2e, 50), percentile(e2e, 99)

    if profile:
        result.split = profile_split(server, slack, args)
    return result


def statuses_failed(sent: Sent) -> int:
    return sum(n for status, n in sent.statuses.items() if status != 200)


# where the daemon's CPU goes -------------------------------------------------------------------
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("pydantic", ("pydantic/", "pydantic_core/")),
    (
        "logging/metrics",
        (
            "logging/",
            "prometheus_client/",
            "rulekit/runtime/logs.py",
            "rulekit/runtime/metrics.py",
            "rulekit/runtime/feed.py",
        ),
    ),
    ("SDK clients", ("slack_sdk/", "aiohttp/", "multidict/", "yarl/", "rulekit/actions/slack")),
    ("store", ("sqlite3/", "rulekit/store/", "psycopg/", "rulekit/runtime/commit.py")),
    ("normalize", ("rulekit_chatra/", "rulekit/channels/")),
    (
        "engine",  # the evaluation worker and the exchanges with it included
        (
            "rulekit/engine/",
            "rulekit/expr/",
            "rulekit/rules/",
            "rulekit/runtime/evaluator.py",
            "rulekit/runtime/worker.py",
            "multiprocessing/connection.py",
            "multiprocessing/reduction.py",
        ),
    ),
    (
        "dispatch",
        (
            "rulekit/runtime/dispatcher.py",
            "rulekit/runtime/calls.py",
            "rulekit/runtime/sharedpace.py",
            "rulekit/runtime/outcomes.py",
            "rulekit/actions/",
        ),
    ),
    (
        "HTTP",
        ("uvicorn/protocols/", "starlette/", "httptools/", "h11/", "rulekit/server/"),
    ),
    ("thread hand-offs", ("anyio/", "threading.py", "queue.py", "concurrent/")),
    ("processing", ("rulekit/",)),
    ("json", ("json/",)),
]
"""Layers by the source path of a frame as py-spy names it (relative to ``sys.path``:
``aiohttp/client.py``, ``rulekit/store/sqlite.py``)."""
SCAFFOLDING = (
    "rulekit/cli/",
    "rulekit/server/daemon.py",
    "click/",
    "uvicorn/_compat.py",
    "uvicorn/server.py",
    "uvicorn/main.py",
    "multiprocessing/process.py",
    "multiprocessing/forkserver.py",
    "multiprocessing/spawn.py",
)
"""What every sample of a process or thread runs in (the command, the server's start, the
worker's bootstrap): no layer's own work, so a sample whose inner frames belong to none (the
event loop's own, a thread waiting) is not counted as theirs."""
_FRAME_PATH = re.compile(r"\(([^()]*?):\d+\)$")


def layer_of(frames: list[str]) -> str:
    """The layer of a sample: that of its innermost frame that belongs to one."""
    for frame in reversed(frames):
        found = _FRAME_PATH.search(frame)
        if found is None:
            continue
        path = found.group(1)
        if path.startswith(SCAFFOLDING):
            continue
        for layer, prefixes in LAYERS:
            if path.startswith(prefixes):
                return layer
    return "event loop / other"


def profile_split(
    server: Server, slack: Slack, args: argparse.Namespace
) -> dict[str, float] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        command = [
            spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--subprocesses",
            "--idle" if args.profile_idle else "--gil",
            "--rate",
            "1000",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            out.name,
        ]
        recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        load = phase("p", max(args.webhooks // 2, 500), args.conversations, server.port)
        asyncio.run(closed_loop("127.0.0.1", server.port, load.requests, CONNECTIONS))
        slack.wait(load.ids)
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)
        counts: Counter[str] = Counter()
        if args.profile_raw:
            shutil.copy(out.name, args.profile_raw)
        for line in Path(out.name).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                counts[layer_of(stack.split(";"))] += int(count)
    total = sum(counts.values())
    return {layer: n / total for layer, n in counts.most_common()} if total else None


# the report ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,500 webhooks, 4 s at --rate")
    parser.add_argument("--webhooks", type=int, default=4000, help="for the throughput phase")
    parser.add_argument("--rate", type=float, default=250, help="offered webhooks/s")
    parser.add_argument("--seconds", type=float, default=8, help="of the latency phase")
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=1, help="rules in the event's bucket")
    parser.add_argument("--no-profile", action="store_true", help="skip the CPU split")
    parser.add_argument("--profile-raw", help="keep py-spy's raw stacks in this file")
    parser.add_argument(
        "--profile-idle", action="store_true", help="sample waiting threads too (wall time)"
    )
    parser.add_argument("--only", choices=("baseline", "rulekit"), help="measure one system")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no profile: does it run")
    args = parser.parse_args()
    args.warm = 200  # webhooks before the measures
    if args.quick:
        args.webhooks, args.seconds = 1500, 4.0
    if args.smoke:
        # enough webhooks for the CPU figures to count clock ticks (10 ms each)
        args.webhooks, args.rate, args.seconds, args.conversations = 200, 20, 0.5, 10
        args.warm, args.no_profile = 10, True

    slack = Slack()
    results: dict[str, Result] = {}
    try:
        for name in [args.only] if args.only else ["baseline", "rulekit"]:
            with tempfile.TemporaryDirectory() as folder:
                if name == "baseline":
                    server = start_baseline(Path(folder), slack.url)
                else:
                    server = start_rulekit(Path(folder), slack.url, args.rules)
                try:
                    profile = name == "rulekit" and not args.no_profile
                    results[name] = run_system(server, slack, args, profile)
                finally:
                    server.stop()
    finally:
        slack.stop()

    if args.only:
        results["baseline" if args.only == "rulekit" else "rulekit"] = Result()
    base, daemon = results["baseline"], results["rulekit"]
    print(
        f"{args.webhooks} webhooks as fast as acknowledged ({CONNECTIONS} connections), then "
        f"{args.rate:g}/s for {args.seconds:g} s; {args.rules} rule(s) in the bucket; "
        f"one Slack message per webhook, each to its own channel"
    )
    rows = [
        ("throughput, webhooks/s", "throughput", "{:.0f}"),
        ("CPU per webhook, ms", "cpu_ms", "{:.2f}"),
        (f"CPU per webhook at {args.rate:g}/s, ms", "rate_cpu_ms", "{:.2f}"),
        (f"ack p99 at {args.rate:g}/s, ms", "ack_p99", "{:.1f}"),
        (f"end-to-end p50 at {args.rate:g}/s, ms", "e2e_p50", "{:.1f}"),
        (f"end-to-end p99 at {args.rate:g}/s, ms", "e2e_p99", "{:.1f}"),
        ("load generator CPU per webhook, ms", "loadgen_ms", "{:.2f}"),
    ]
    print(f"{'':38} {'baseline':>10} {'rulekit':>10} {'ratio':>7}")
    for label, attr, form in rows:
        b, r = getattr(base, attr), getattr(daemon, attr)
        ratio = f"{r / b:.2f}x" if b else "-"
        print(f"{label:38} {form.format(b):>10} {form.format(r):>10} {ratio:>7}")
    for name, result in results.items():
        if result.lost or result.late:
            print(
                f"{name}: {result.lost} messages missing after the throughput phase, "
                f"{result.late} missing or refused in the latency phase"
            )
    if base.throughput and daemon.throughput and base.cpu_ms:
        print(
            f"targets: throughput >= 0.5x ({daemon.throughput / base.throughput:.2f}x), "
            f"CPU per webhook <= 2x ({daemon.cpu_ms / base.cpu_ms:.2f}x); at 250/s ack p99 "
            f"<= 50 ms ({daemon.ack_p99:.0f}), end-to-end p99 <= 100 ms ({daemon.e2e_p99:.0f})"
        )
    for name, result in results.items():
        if result.threads:
            parts = ", ".join(f"{part} {ms:.2f}" for part, ms in result.threads.items())
            print(f"{name}'s CPU per webhook by thread, ms (throughput phase): {parts}")
    if daemon.split:
        print(
            "rulekit's CPU by layer (py-spy samples of its processes holding their GIL: a thread"
            " inside SQLite or a system call is not sampled, each evaluation worker has a GIL"
            " of its own):"
        )
        for layer, share in daemon.split.items():
            print(f"  {layer:22} {share * 100:5.1f}%  ~{share * daemon.cpu_ms:.2f} ms/webhook")
    elif not args.no_profile:
        print("no CPU split: py-spy is not installed (pip install py-spy)")


if __name__ == "__main__":
    main()
