"""A conversation's next event from outside is evaluated after the changes rulekit's own
``updated`` events caused (a chain): rule A tags a new chat ``vip``, rule B, on that
``updated`` event, sets the field ``tier``; a client message right behind the chat's start
is evaluated with ``tier: gold``, as ``rulekit test`` (which applies chains first) says.
Before, the message was evaluated as soon as the chat's start was recorded, while the
``updated`` event of its tag still waited to be handed over: the daemon answered as for a
chat without a tier (SQLite and PostgreSQL, the fake Chatra)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from daemons import chat_fragment, chat_started, wait_for, write_setup
from rulekit_chatra.payload import client_key

from rulekit.audit.dryrun import run_input
from rulekit.engine.engine import Engine
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.pipeline import Pipeline
from rulekit.runtime.processor import CHANGES_WAIT, Processor
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.memory import MemoryStore
from rulekit.store.sqlite import SQLiteStore

RULES = """\
- name: VIP on start
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: [vip]}
- name: VIP are gold
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  if: "'vip' in changed.tags.added"
  do:
    - set: {fields: {tier: gold}}
- name: Gold messages
  on: {channel: online-chat, event: message}
  if: conversation.fields.tier == 'gold'
  do:
    - autoreply: {text: "A gold agent is on it"}
- name: Other messages
  on: {channel: online-chat, event: message}
  if: conversation.fields.tier != 'gold'
  do:
    - autoreply: {text: "We will answer soon"}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def setup(folder: Path, chatra, storage: str | None) -> Path:
    config = write_setup(folder, RULES, chatra=chatra)
    if storage is not None:
        config.write_text(
            config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
        )
    return config


def dry_run(folder: Path, config: Path, bodies: list[bytes]) -> list[tuple[str, str, str]]:
    """What ``rulekit test`` plans for ``bodies`` in order: (event, rule, action) of each."""
    pipeline = Pipeline(Engine.from_path(folder / "rules.d", config), MemoryStore())
    planned = []
    for n, body in enumerate(bodies):
        path = folder / f"input{n}.json"
        path.write_bytes(body)
        result = run_input(pipeline, path, "online-chat", None)
        assert result.error is None
        planned += [
            (event.event, action.rule, action.action)
            for event, plan in result.events
            for action in plan
        ]
    return planned


def arrive_together(store, bodies: list[bytes]) -> None:
    """``bodies`` stored in the inbox at once, as the ingest stores them: the processor takes
    them in one round, the second right after the first is recorded."""
    with store.transaction() as state:
        for body in bodies:
            state.append_inbox(
                "online-chat",
                body,
                delivery_key="sha256:" + hashlib.sha256(body).hexdigest(),
                conversation_key=client_key(json.loads(body)),
            )


def test_a_message_right_behind_a_chain_sees_what_the_chain_changed(
    tmp_path, serve, chatra, storage
):
    config = setup(tmp_path, chatra, storage)
    server = serve(config)
    store = server.daemon.store
    bodies = [chat_started(1), chat_fragment(1, 1, "where is my order?")]
    arrive_together(store, bodies)

    def settled() -> list:
        with store.transaction() as state:
            jobs = state.jobs(status="done", limit=100)
            if state.jobs(status="pending") or len(jobs) < 3:
                return []
            kinds = {r.event_id: r.event for r in state.history(limit=100)}
        return [(kinds[j.event_id], j.rule, j.action) for j in jobs]

    done = wait_for(settled, timeout=60)
    planned = dry_run(tmp_path, config, bodies)
    assert ("message", "Gold messages", "autoreply") in planned
    assert sorted(done) == sorted(planned)
    assert [m["text"] for m in chatra.sent] == ["A gold agent is on it"]
    with store.transaction() as state:
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
        assert not state.jobs(status="dead")
        order = [r.event for r in sorted(state.history(limit=100), key=lambda r: r.processed_at)]
    assert conversation.tags == ["vip"]
    assert conversation.fields == {"tier": "gold"}
    # the chain's events were recorded before the message, as rulekit test orders them
    assert order == ["created", "updated", "updated", "message"]


def test_an_item_waits_for_its_conversations_chain_alone_and_for_a_while_at_most(tmp_path, chatra):
    """While the chain of one conversation is being recorded (here nobody records it: no
    dispatcher), its next message waits, claimed, and the other conversations' items go on;
    past :data:`CHANGES_WAIT` it is evaluated without the chain rather than hold the
    conversation up for ever."""
    config = setup(tmp_path, chatra, None)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "state.sqlite3")
    now = [0.0]
    processor = Processor(
        store,
        lambda: snapshot,
        evaluator,
        metrics=Metrics(),
        feed=LiveFeed(),
        clock=lambda: now[0],
    )
    try:
        arrive_together(store, [chat_started(1), chat_fragment(1, 1, "hi"), chat_started(2)])

        def recorded() -> list[str]:
            with store.transaction() as state:
                return sorted(f"{r.event} {r.conversation_id[-1]}" for r in state.history())

        processor.process_round(snapshot)  # both chats start; the message is claimed next
        assert recorded() == ["created 1", "created 2"]
        processor.process_round(snapshot)
        assert processor.waits_for_changes
        arrive_together(store, [chat_started(3)])
        processor.process_round(snapshot)  # the third chat does not wait with the message
        assert recorded() == ["created 1", "created 2", "created 3"]
        with store.transaction() as state:
            (message,) = [i for i in state.inbox_items() if i.status == "pending"]
        assert message.claimed_by == processor.owner
        now[0] += CHANGES_WAIT
        processor.process_round(snapshot)
        assert not processor.waits_for_changes
        assert recorded() == ["created 1", "created 2", "created 3", "message 1"]
        with store.transaction() as state:
            rules = {job.rule for job in state.jobs(status="pending", limit=100)}
        assert "Other messages" in rules  # evaluated without the chain
    finally:
        evaluator.close()
        store.close()


@pytest.mark.slow
def test_daemons_sharing_postgres_wait_for_each_others_chains(
    tmp_path, processes, chatra, postgres_url
):
    """The chat starts at one daemon, the message arrives at another right after: whichever
    evaluates the message waits for the chain, whichever daemon records it."""
    config = setup(tmp_path, chatra, postgres_url)
    daemons = [processes(config) for _ in range(2)]
    for daemon in daemons:
        daemon.wait_ready()
    chats = 4
    with httpx.Client(timeout=10) as client:
        for n in range(1, chats + 1):
            for daemon, body in zip(
                daemons, [chat_started(n), chat_fragment(n, 1, "hi")], strict=True
            ):
                response = client.post(daemon.webhook_url, content=body)
                assert response.status_code == 200, response.text
    wait_for(lambda: len(chatra.sent) >= chats, timeout=60)
    assert [m["text"] for m in chatra.sent] == ["A gold agent is on it"] * chats
