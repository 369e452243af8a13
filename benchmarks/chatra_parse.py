"""Chatra webhook parsing: bodies parsed and normalized per second, as a ratio to ``json.loads``.

    python benchmarks/chatra_parse.py            # 1,000 conversations (11,000 bodies)
    python benchmarks/chatra_parse.py --quick    # 200 conversations

The bodies are the Chatra plugin's sample webhooks, with ids rewritten per conversation so that
every conversation is new work: a chat started, a client message, an agent reply from Chatra's
app, our own echo with a client message, a redelivery, a pre-chat form, transcripts and a
reopened chat. They go through ``ChatraProvider.parse`` (JSON decoding, tolerant reading, event
normalization with conversation state in a ``MemoryStore``) and, as the baseline, through
``json.loads`` alone, in the same run. Target: parse at >= 0.25x the rate of ``json.loads``.

The state is used without a transaction per body: the in-memory store's transaction copies the
whole state (to roll back), which measures the store, not the parser (see benchmarks/store.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rulekit_chatra import ChatraProvider, ChatraSettings
from rulekit_chatra.payload import parse_body

from rulekit.channels import ChannelContext
from rulekit.config import AgentEntry, Directory
from rulekit.store import MemoryStore

SAMPLES = Path(__file__).resolve().parent.parent / "plugins" / "chatra" / "tests" / "data"
TARGET = 0.25

# One conversation's deliveries, in order (a name twice is a redelivery).
SEQUENCE = [
    "chat_started_anonymous.json",
    "chat_fragment_client_message.json",
    "chat_fragment_agent_reply_from_app.json",
    "chat_fragment_api_echo.json",
    "chat_fragment_api_echo.json",
    "chat_started_bound_user_agent_initiated.json",
    "chat_fragment_prechat_form.json",
    "chat_transcript_with_email.json",
    "chat_reopened_1_transcript.json",
    "chat_reopened_2_started.json",
    "chat_reopened_1_transcript.json",
]


def renamed(payload: Any, suffix: str) -> Any:
    """The payload with every client, chat and message id made unique to one conversation."""
    if isinstance(payload, list):
        return [renamed(item, suffix) for item in payload]
    if not isinstance(payload, dict):
        return payload
    out = {key: renamed(value, suffix) for key, value in payload.items()}
    if "type" in out and isinstance(out.get("id"), str):  # a message
        out["id"] = f"{out['id']}-{suffix}"
    if isinstance(out.get("chatId"), str):
        out["chatId"] = f"{out['chatId']}-{suffix}"
    return out


def make_bodies(conversations: int) -> list[bytes]:
    samples = {name: json.loads((SAMPLES / name).read_bytes()) for name in set(SEQUENCE)}
    bodies = []
    for number in range(conversations):
        for name in SEQUENCE:
            payload = renamed(samples[name], str(number))
            payload["client"]["id"] = f"{payload['client']['id']}-{number}"
            bodies.append(json.dumps(payload, ensure_ascii=False).encode())
    return bodies


class TimedState:
    """A state that adds up the time spent in its methods (for the breakdown only)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.state, name)

        def timed(*args: Any) -> Any:
            started = time.process_time()
            try:
                return method(*args)
            finally:
                self.seconds += time.process_time() - started

        return timed


def make_provider() -> ChatraProvider:
    anna = AgentEntry(email="anna@shop.example.com", name="Anna", channels=["online-chat"])
    settings = ChatraSettings(default_group="support")
    return ChatraProvider(ChannelContext("online-chat", settings, Directory([anna], [])))


def best_times(repeat: int, runs: dict[str, Callable[[], int]]) -> dict[str, tuple[float, int]]:
    """The fastest of ``repeat`` runs of each function (seconds), and what it returned.

    Times are the process's CPU time, and the runs are interleaved, so that other processes
    on the machine disturb the comparison as little as possible.
    """
    best = {name: (float("inf"), 0) for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.process_time()
            result = run()
            elapsed = time.process_time() - started
            if elapsed < best[name][0]:
                best[name] = (elapsed, result)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer conversations and runs")
    args = parser.parse_args(argv)
    conversations, repeat = (200, 5) if args.quick else (1000, 7)
    bodies = make_bodies(conversations)
    size = sum(map(len, bodies)) / len(bodies)

    def decode() -> int:
        for body in bodies:
            json.loads(body)
        return 0

    def read() -> int:
        for body in bodies:
            parse_body(body)
        return 0

    def parse() -> int:
        provider = make_provider()
        with MemoryStore().transaction() as state:
            return sum(len(provider.parse(body, state)) for body in bodies)

    def store_share() -> float:
        provider = make_provider()
        with MemoryStore().transaction() as inner:
            state = TimedState(inner)
            for body in bodies:
                provider.parse(body, state)  # type: ignore[arg-type]
        return state.seconds

    best = best_times(repeat, {"decode": decode, "read": read, "parse": parse})
    (baseline, _), (reading, _), (parsing, events) = best["decode"], best["read"], best["parse"]
    storing = min(store_share() for _ in range(repeat))
    n = len(bodies)
    ratio = baseline / parsing

    def line(label: str, seconds: float) -> str:
        return f"{label:<38}{n / seconds:10,.0f} bodies/s {seconds / n * 1e6:8.1f} µs/body"

    print(f"bodies: {n:,} ({conversations:,} conversations, {size:,.0f} bytes on average)")
    print(line("json.loads", baseline))
    print(line("parse_body (json.loads + reading)", reading))
    print(line("ChatraProvider.parse (all of it)", parsing))
    share = storing / n * 1e6
    print(f"  of which store calls: {share:.1f} µs/body (SQLite in memory)")
    print(f"events: {events:,} ({events / parsing:,.0f} events/s)")
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio parse/json.loads: {ratio:.3f}x (target >= {TARGET}x): {verdict}")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
