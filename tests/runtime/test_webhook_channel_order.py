"""The ``webhook`` channel's bodies carry their conversation's key, as every provider's do.

The built-in provider said none: its bodies were claimed freely, so with several daemons a
conversation's events were processed in any order, and a timed rule's timer did not wait for
the webhooks of its conversation received before it fell due: an ``agent_replied`` posted in
time, but not processed yet (processing behind), did not cancel "nobody answered", which
fired after the agent had answered.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from daemons import write_setup
from hostile import Inbox

from rulekit.channels import body as body_json
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore

SECRET = "web-secret-0123456789"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TIMED = """\
- name: Nobody answered
  on: {channel: web, event: created}
  after: 5m
  cancel_on: agent_replied
  do:
    - tag: {add: [waited]}
"""


def web_setup(folder: Path, rules: str) -> Path:
    config = write_setup(folder, rules)
    config.write_text(
        config.read_text().replace(
            "channels:\n", f"channels:\n  web: {{provider: webhook, webhook_secret: {SECRET}}}\n"
        )
    )
    return config


def event(name: str, conversation: str, n: int, when: datetime, **parts: Any) -> bytes:
    return json.dumps(
        {
            "event": name,
            "id": f"{conversation}-{n}",
            "occurred_at": when.isoformat(),
            "conversation": {"id": conversation},
            "client": {"id": f"client-of-{conversation}"},
            **parts,
        }
    ).encode()


def started(conversation: str, when: datetime) -> bytes:
    message = {"id": f"{conversation}-m0", "text": "Hello?", "author": "client"}
    return event("created", conversation, 0, when, message=message)


def answered(conversation: str, when: datetime) -> bytes:
    message = {"id": f"{conversation}-m1", "text": "Hi!", "author": "agent"}
    return event("agent_replied", conversation, 1, when, message=message)


def test_a_timer_waits_for_the_agent_reply_posted_before_it_fell_due(tmp_path: Path) -> None:
    config = web_setup(tmp_path, TIMED)
    snapshot = load_snapshot(config)
    provider = snapshot.providers["web"]
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    clock = [T0]
    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        runner = TimerRunner(
            store, lambda: snapshot, evaluator, owner="test:1", now=lambda: clock[0]
        )

        def receive(body: bytes, when: datetime) -> None:
            # as the ingest keeps a webhook: its conversation key read from the checked body
            key = provider.conversation_key(body_json.load(body))
            with store.transaction() as state:
                state.append_inbox("web", body, conversation_key=key, now=when)

        def process() -> None:
            while processor.process_round(snapshot)[1]:
                pass

        def statuses() -> dict[str, str]:
            with store.transaction() as state:
                return {t.conversation_id: t.status for t in state.timers()}

        receive(started("order-1", T0), T0)
        receive(started("web:order-2", T0), T0)
        process()  # two timers, due at 10:05
        receive(answered("web:order-1", T0 + timedelta(minutes=4)), T0 + timedelta(minutes=4))
        clock[0] = T0 + timedelta(minutes=6)
        fired = runner.fire_due()
        assert [f.timer.conversation_id for f in fired] == ["web:order-2"]
        assert statuses() == {"web:order-1": "pending", "web:order-2": "fired"}
        process()
        assert statuses()["web:order-1"] == "cancelled"
    finally:
        evaluator.close()
        store.close()


def test_posted_bodies_of_one_conversation_share_its_key(tmp_path: Path, serve) -> None:
    """However the sender writes the conversation's id (with the channel's prefix or without,
    too long to store as it is, in a list of events), its bodies are kept under the key the
    conversation is stored under; a list of several conversations' events has none."""
    server = serve(web_setup(tmp_path, TIMED))
    url = f"{server.url}/webhooks/web/{SECRET}"
    long_id = "x" * 300
    bodies = [
        started("order-7", T0),
        answered("web:order-7", T0),
        b"[" + started("order-8", T0) + b"," + answered("web:order-8", T0) + b"]",
        b"[" + started("order-9", T0) + b"," + started("order-10", T0) + b"]",
        started(long_id, T0),
    ]
    ids = []
    for body in bodies:
        answer = httpx.post(url, content=body)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    inbox = Inbox(tmp_path / "rulekit.sqlite3")
    assert inbox.settle(ids) == {n: ("done", None) for n in ids}
    keys = [inbox.conversation_key(n) for n in ids]
    assert keys[:4] == ["order-7", "order-7", "order-8", None]
    with SQLiteStore(tmp_path / "rulekit.sqlite3").transaction() as state:
        for key in ("order-7", "order-8", keys[4]):
            assert key is not None and state.get_conversation("web", key) is not None
        assert keys[4] != long_id and state.get_conversation("web", long_id) is None


def test_messages_read_out_of_order_move_no_reply_time_back(tmp_path: Path, serve) -> None:
    """Webhooks may come out of order (a sender's retry after a lost answer, several
    connections at once). An agent's reply written before the last one known, read after it,
    set ``last_agent_reply_at`` (and ``last_agent``) back to it, and a client's message
    ``last_client_message_at``: a timed rule's ``unless: conversation.last_agent_reply_at >
    trigger.occurred_at`` then saw no answer where the agent had answered. The first reply is
    the earliest, whenever it is read."""
    server = serve(web_setup(tmp_path, TIMED))
    url = f"{server.url}/webhooks/web/{SECRET}"
    anna, lena = "anna@shop.example.com", "lena@shop.example.com"

    def reply(n: int, minutes: int, agent: str) -> bytes:
        message = {"id": f"m{n}", "text": "Hi!", "author": "agent"}
        when = T0 + timedelta(minutes=minutes)
        return event("agent_replied", "order-1", n, when, message=message, agent={"email": agent})

    def wrote(n: int, minutes: int) -> bytes:
        message = {"id": f"m{n}", "text": "Hello?", "author": "client"}
        return event("message", "order-1", n, T0 + timedelta(minutes=minutes), message=message)

    ids = []
    for body in (started("order-1", T0), reply(1, 3, anna), reply(2, 1, lena)):
        ids.append(httpx.post(url, content=body).json()["id"])
    for body in (wrote(3, 9), wrote(4, 5)):
        ids.append(httpx.post(url, content=body).json()["id"])
    inbox = Inbox(tmp_path / "rulekit.sqlite3")
    assert inbox.settle(ids) == {n: ("done", None) for n in ids}
    with SQLiteStore(tmp_path / "rulekit.sqlite3").transaction() as state:
        conversation = state.get_conversation("web", "order-1")
    assert conversation is not None
    assert conversation.last_agent_reply_at == T0 + timedelta(minutes=3)
    assert conversation.last_agent == anna
    assert conversation.first_agent_reply_at == T0 + timedelta(minutes=1)
    assert conversation.last_client_message_at == T0 + timedelta(minutes=9)


def test_messages_of_two_conversations_with_one_id_are_both_processed(
    tmp_path: Path, serve
) -> None:
    """A sender numbering messages per conversation (a ticket's first comment is ``1``) saw
    the second conversation's message ``1`` taken for a redelivery of the first's and dropped
    unrecorded: message ids were marked seen for the whole channel. A message posted again in
    its own conversation is still recognised."""
    server = serve(web_setup(tmp_path, TIMED))
    url = f"{server.url}/webhooks/web/{SECRET}"

    def written(conversation: str, n: int) -> bytes:
        message = {"id": "1", "text": f"first comment of {conversation}", "author": "client"}
        return event("message", conversation, n, T0, message=message)

    bodies = [
        started("ticket-1", T0),
        started("ticket-2", T0),
        written("ticket-1", 5),
        written("ticket-2", 5),
        written("web:ticket-1", 6),  # the same message again, under another event id
    ]
    ids = [httpx.post(url, content=body).json()["id"] for body in bodies]
    inbox = Inbox(tmp_path / "rulekit.sqlite3")
    assert inbox.settle(ids) == {n: ("done", None) for n in ids}
    assert [inbox.events(n) for n in ids[2:]] == [["web:ticket-1-5"], ["web:ticket-2-5"], []]
