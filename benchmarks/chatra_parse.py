"""Chatra webhook parsing: bodies parsed and normalized per second, as a ratio to ``json.loads``.

    python benchmarks/chatra_parse.py            # 1,000 conversations (11,000 bodies)
    python benchmarks/chatra_parse.py --quick    # 200 conversations
    python benchmarks/chatra_parse.py --smoke    # 5 conversations, one run: does it run

The bodies are the Chatra plugin's sample webhooks, with ids rewritten per conversation so that
every conversation is new work: a chat started, a client message, an agent reply from Chatra's
app, our own echo with a client message, a redelivery, a pre-chat form, transcripts and a
reopened chat. In the same run, interleaved, they go through:

* ``json.loads`` alone: the baseline;
* ``parse_body``: decoding and tolerant reading;
* ``ChatraProvider.parse`` on a state kept in Python dicts: everything the parser does (decoding,
  reading, normalization, building the events), with the conversation state's cost left out;
  the headline ratio is this one. Target: >= 0.25x the rate of ``json.loads``;
* ``ChatraProvider.parse`` on a ``MemoryStore`` (SQLite in memory): all of it, the store's
  calls included (their share is printed on its own; the store is measured by
  benchmarks/store.py).

The state is used without a transaction per body: the in-memory store's transaction copies the
whole state (to roll back), which measures the store, not the parser.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rulekit_chatra import ChatraProvider, ChatraSettings
from rulekit_chatra.payload import parse_body

from rulekit.channels import ChannelContext
from rulekit.directory import AgentEntry, Directory
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


class DictState:
    """Conversation state in Python dicts: what the Chatra provider asks of a state, at the
    cost of a dict lookup (so that the parser's own time can be told from the store's).

    Keyed per channel (a dict of each channel's dicts), so that keeping a key costs no tuple:
    the tuples of ``(channel, key)`` keys were the cyclic garbage collector's to track, and
    what that cost was the state's, not the parser's."""

    def __init__(self) -> None:
        self.conversations: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.keys: defaultdict[str, dict[str, str]] = defaultdict(dict)  # by conversation id
        self.clients: defaultdict[str, dict[str, Any]] = defaultdict(dict)
        self.seen: defaultdict[str, set[str]] = defaultdict(set)

    def get_conversation(self, channel: str, key: str) -> Any:
        return self.conversations[channel].get(key)

    def save_conversation(self, channel: str, key: str, conversation: Any) -> None:
        self.conversations[channel][key] = conversation
        self.keys[channel][conversation.id] = key

    def find_conversation(self, channel: str, conversation_id: str) -> Any:
        key = self.keys[channel].get(conversation_id)
        return None if key is None else (key, self.conversations[channel][key])

    def get_client(self, channel: str, client_id: str) -> Any:
        return self.clients[channel].get(client_id)

    def save_client(self, channel: str, client: Any) -> None:
        self.clients[channel][client.id] = client

    def get_conversation_and_client(self, channel: str, key: str) -> tuple[Any, Any]:
        return self.conversations[channel].get(key), self.clients[channel].get(key)

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        return self.mark_messages_seen(channel, [message_id])[0]

    def mark_messages_seen(self, channel: str, message_ids: list[str]) -> list[bool]:
        seen = self.seen[channel]
        fresh = []
        for message_id in message_ids:
            new = message_id not in seen
            if new:
                seen.add(message_id)
            fresh.append(new)
        return fresh

    def message_seen(self, channel: str, message_id: str) -> bool:
        return message_id in self.seen[channel]


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
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one run; exits 0 whatever the ratio"
    )
    args = parser.parse_args(argv)
    conversations, repeat = (5, 1) if args.smoke else (200, 5) if args.quick else (1000, 7)
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
        provider, state = make_provider(), DictState()
        return sum(len(provider.parse(body, state)) for body in bodies)  # type: ignore[arg-type]

    def parse_stored() -> int:
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

    def statements() -> float:
        """Statements per body on the store's state (each a round trip, on PostgreSQL)."""
        provider = make_provider()
        with MemoryStore().transaction() as state:
            for body in bodies:
                provider.parse(body, state)
            return state.statements / len(bodies)

    runs = {"decode": decode, "read": read, "parse": parse, "stored": parse_stored}
    best = best_times(repeat, runs)
    (baseline, _), (reading, _), (parsing, events) = best["decode"], best["read"], best["parse"]
    stored, stored_events = best["stored"]
    assert stored_events == events, "the two states must yield the same events"
    storing = min(store_share() for _ in range(repeat))
    n = len(bodies)
    ratio = baseline / parsing

    def line(label: str, seconds: float) -> str:
        return f"{label:<46}{n / seconds:10,.0f} bodies/s {seconds / n * 1e6:8.1f} µs/body"

    print(f"bodies: {n:,} ({conversations:,} conversations, {size:,.0f} bytes on average)")
    print(line("json.loads", baseline))
    print(line("parse_body (decoding + reading)", reading))
    print(line("ChatraProvider.parse, state in dicts", parsing))
    print(line("ChatraProvider.parse, MemoryStore (all of it)", stored))
    share = storing / n * 1e6
    print(
        f"  of which store calls: {share:.1f} µs/body (SQLite in memory, see benchmarks/store.py)"
    )
    print(f"  store statements: {statements():.2f}/body")
    print(f"events: {events:,} ({events / parsing:,.0f} events/s on the dict state)")
    print(f"ratio all of it (MemoryStore)/json.loads: {baseline / stored:.3f}x")
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(
        f"ratio parse/json.loads (the parser's own: state in dicts, store excluded): "
        f"{ratio:.3f}x (target >= {TARGET}x): {verdict}"
    )
    return 0 if ratio >= TARGET or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
