"""Building blocks of the audit tests: a recorded site (config, rules, and a real SQLite store
filled the way the daemon fills it: events evaluated with ``explain=True``, recorded with their
trace and jobs, then attempts)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result
from scaffold import write

from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.engine.trace import trace_of
from rulekit.event import Client, Conversation, Event
from rulekit.store import JobSpec
from rulekit.store.sqlite import SQLiteStore

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
JANE_EMAIL = "jane.doe@example.org"
REFUND_TEXT = "I want a refund for order 77"

CONFIG = """
rules: rules.d
storage: sqlite:///audit.sqlite3
timezone: UTC
channels:
  online-chat: {provider: chatra}
"""

RULES = """
- name: Refunds to Slack
  on: {channel: online-chat, event: message}
  if: "'refund' in message.text|lower"
  do:
    - slack: {channel: "#ops", text: "Refund from {{ client.name }}: {{ message.text }}"}

- name: Bell for new chats
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell, to: everyone}

- name: Angry clients
  on: {channel: online-chat, event: message}
  if:
    - message.author == 'client'
    - "'angry' in message.text|lower"
  do:
    - play_sound: {sound: alert, to: everyone}
"""


@dataclass
class Site:
    """The files of a recorded site, and a CLI runner pointed at its config."""

    root: Path
    config: Path
    database: Path

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, [*args, "--config", str(self.config)], input=input)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Read the SQLite file directly, bypassing rulekit."""
        conn = sqlite3.connect(self.database)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()


def events() -> list[Event]:
    jane = {"id": "c-jane", "name": "Jane Doe", "email": JANE_EMAIL, "display_name": "Jane D."}
    bob = {"id": "c-bob", "name": "Bob Roe", "display_name": "Visitor 4p40"}
    return [
        Event(
            id="chatra:created:jane-1",
            channel="online-chat",
            event="created",
            occurred_at=T0,
            conversation={"id": "conv-jane", "status": "open"},
            client=jane,
            message={"id": "m1", "text": "hello there", "author": "client"},
        ),
        Event(
            id="chatra:message:jane-2",
            channel="online-chat",
            event="message",
            occurred_at=T0 + timedelta(minutes=1),
            conversation={"id": "conv-jane", "status": "open"},
            client=jane,
            message={"id": "m2", "text": REFUND_TEXT, "author": "client"},
        ),
        Event(
            id="chatra:message:bob-1",
            channel="online-chat",
            event="message",
            occurred_at=T0 + timedelta(minutes=2),
            conversation={"id": "conv-bob", "status": "open"},
            client=bob,
            message={"id": "m3", "text": "refund now, I am angry", "author": "client"},
        ),
    ]


def record(store: SQLiteStore, engine: Engine, event: Event, body: bytes) -> list[int]:
    """Record ``event`` as the daemon does; return its job ids."""
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox(event.channel, body, now=event.occurred_at)
        plan = engine.evaluate(event, state, explain=True)
        jobs = [
            JobSpec(
                rule=planned.rule,
                action=planned.action,
                params=planned.model.model_dump(mode="json"),
                destination=engine.actions[planned.action].destination(planned.model),
            )
            for planned in plan.runnable
        ]
        processed = event.occurred_at + timedelta(seconds=1)
        state.record_event(
            event,
            inbox_id=inbox_id,
            trace=trace_of(plan, rules_version=engine.version),
            jobs=jobs,
            now=processed,
        )
        plan.apply(state)
        state.finish_inbox(inbox_id)
        state.save_client(event.channel, Client.model_validate(event.client.model_dump()))
        state.save_conversation(
            event.channel,
            event.client.id or "",
            Conversation(id=event.conversation.id, status="open", page="/orders/77"),
        )
        return [job.id for job in state.jobs(event_id=event.id)]


def build_site(tmp_path: Path) -> Site:
    """Three recorded events: Jane's new chat (a bell, done), Jane's refund message (Slack:
    a 429, then done), Bob's angry refund message (Slack dead, the alarm pending)."""
    root = tmp_path / "site"
    config = write(root / "rulekit.yaml", CONFIG)
    write(root / "rules.d" / "rules.yaml", RULES)
    engine = Engine.from_path(root / "rules.d", config)
    store = SQLiteStore(root / "audit.sqlite3")
    try:
        created, refund, angry = events()
        (bell,) = record(store, engine, created, b'{"client": {"id": "c-jane"}, "t": "hello"}')
        (slack_jane,) = record(
            store,
            engine,
            refund,
            f'{{"client": {{"id": "c-jane"}}, "t": "{REFUND_TEXT}"}}'.encode(),
        )
        slack_bob, alarm = record(store, engine, angry, b'{"client": {"id": "c-bob"}}')
        with store.transaction() as state:
            state.record_attempt(bell, "done", result={"played": 2}, now=T0 + timedelta(seconds=2))
            state.record_attempt(
                slack_jane,
                "retry",
                error="429 Too Many Requests",
                retry_at=T0 + timedelta(minutes=2),
                now=T0 + timedelta(minutes=1, seconds=2),
            )
            state.record_attempt(
                slack_jane,
                "done",
                result={"ts": "1714554000.0001", "text": f"Refund from Jane Doe: {REFUND_TEXT}"},
                now=T0 + timedelta(minutes=2, seconds=1),
            )
            state.record_attempt(
                slack_bob, "dead", error="channel_not_found", now=T0 + timedelta(minutes=3)
            )
            assert alarm
    finally:
        store.close()
    return Site(root, config, root / "audit.sqlite3")


def build_busy_site(tmp_path: Path, count: int) -> Site:
    """``count`` recorded messages (``chatra:message:m-00`` ...), one a minute, in three
    conversations; the odd ones ask for a refund (Refunds to Slack enqueued a job)."""
    root = tmp_path / "site"
    config = write(root / "rulekit.yaml", CONFIG)
    write(root / "rules.d" / "rules.yaml", RULES)
    engine = Engine.from_path(root / "rules.d", config)
    store = SQLiteStore(root / "audit.sqlite3")
    try:
        for n in range(count):
            event = Event(
                id=f"chatra:message:m-{n:02d}",
                channel="online-chat",
                event="message",
                occurred_at=T0 + timedelta(minutes=n),
                conversation={"id": f"conv-{n % 3}", "status": "open"},
                client={"id": f"c-{n % 3}", "name": f"Client {n % 3}"},
                message={"id": f"m{n}", "text": "refund" if n % 2 else "hello", "author": "client"},
            )
            record(store, engine, event, b"{}")
    finally:
        store.close()
    return Site(root, config, root / "audit.sqlite3")
