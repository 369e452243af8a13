"""Shared by the daemon benchmarks: a config and rules in a temporary folder, webhook bodies,
a `rulekit run` subprocess, and latency statistics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SECRET = "bench-secret-0123456789"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "chatra"
STARTED = json.loads((EXAMPLES / "chat_started_anonymous.json").read_text())
FRAGMENT = json.loads((EXAMPLES / "chat_fragment_client_message.json").read_text())


def chat_started(conversation: int, message: str) -> bytes:
    body = json.loads(json.dumps(STARTED))
    body["message"]["id"] = message
    body["client"]["id"] = f"client{conversation:08d}"
    body["client"]["chatId"] = f"chat{conversation:08d}"
    return json.dumps(body).encode()


def chat_fragment(conversation: int, message: str) -> bytes:
    body = json.loads(json.dumps(FRAGMENT))
    body["messages"][0]["id"] = message
    body["client"]["id"] = f"client{conversation:08d}"
    body["client"]["chatId"] = f"chat{conversation:08d}"
    return json.dumps(body).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, rules: str, extra: str = "") -> Path:
    (folder / "rules.d").mkdir(exist_ok=True)
    (folder / "rules.d" / "rules.yaml").write_text(rules)
    config = folder / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        "storage: sqlite:///rulekit.sqlite3\n"
        "logging: {level: warning}\n"
        "channels:\n"
        "  online-chat:\n"
        "    provider: chatra\n"
        f"    webhook_secret: {SECRET}\n"
        f"{extra}"
    )
    return config


class Daemon:
    """`rulekit run` in a subprocess."""

    def __init__(self, config: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = f"{self.url}/webhooks/online-chat/{SECRET}"
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rulekit.cli.main", "run", "--config", str(config)),
                *("--port", str(self.port), "--no-watch", *args),
            ],
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 120) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"rulekit run exited: {self.proc.stderr.read().decode()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit("rulekit run did not become ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
