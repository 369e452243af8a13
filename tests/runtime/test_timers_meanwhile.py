"""What a timer reads when it fires may change while it is evaluated: ``rulekit forget`` erases
its client, an agent answers. The firing is then evaluated again on what is recorded now,
never recorded on what was read before: the fired event and its jobs quoted the erased
client's name and message, and an ``unless:`` that an agent's reply made true still sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemons import chat_started, write_setup
from test_timers_replay import agent_reply, at

from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
RULES = """\
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: 5m
  unless: "conversation.last_agent_reply_at and
    conversation.last_agent_reply_at > trigger.occurred_at"
  do:
    - autoreply: {text: "Sorry for the wait, {{ client.display_name }}: {{ message.text }}"}
"""


class Meanwhile(Evaluator):
    """A real evaluation worker; ``meanwhile`` runs once, after the first batch of timers is
    evaluated and before it is recorded (as another process would)."""

    meanwhile: Callable[[], None] | None = None

    def evaluate_many(self, requests: list[Any]) -> Any:
        answers = super().evaluate_many(requests)
        action, self.meanwhile = self.meanwhile, None
        if action is not None and requests:
            action()
        return answers


def _setup(tmp_path: Path, chatra: Any) -> tuple[Any, Meanwhile, SQLiteStore, Processor, Any]:
    config = write_setup(tmp_path, RULES, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Meanwhile(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    processor = Processor(store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed())
    return snapshot, evaluator, store, processor, snapshot.providers["online-chat"]


def _deliver(store: SQLiteStore, processor: Processor, snapshot: Any, body: bytes) -> None:
    provider = snapshot.providers["online-chat"]
    with store.transaction() as state:
        key = provider.conversation_key(json.loads(body))
        state.append_inbox("online-chat", body, conversation_key=key)
    while processor.process_round(snapshot)[1]:
        pass


def test_a_client_forgotten_while_their_timer_is_evaluated_is_not_quoted(tmp_path, chatra):
    snapshot, evaluator, store, processor, _ = _setup(tmp_path, chatra)
    try:
        _deliver(store, processor, snapshot, at(chat_started(1, "my secret words"), T0))
        runner = TimerRunner(
            store,
            lambda: snapshot,
            evaluator,
            owner="test:1",
            now=lambda: T0 + timedelta(minutes=6),
        )

        def forget() -> None:
            with store.transaction() as state:
                state.forget_client("client00000001")

        evaluator.meanwhile = forget
        fired = runner.fire_due()
        assert [f.outcome for f in fired] == ["fired"]
        assert evaluator.meanwhile is None  # the erasure ran between evaluation and record
        with store.transaction() as state:
            (timer,) = state.timers()
            record = state.get_event(timer.by_event or "")
            assert record is not None
            jobs = state.jobs(event_id=record.event_id)
        stored = json.dumps([record.data, record.trace, [job.params for job in jobs]])
        assert "Visitor 1" not in stored
        assert "my secret words" not in stored
        assert [job.params["text"] for job in jobs] == ["Sorry for the wait, : "]
    finally:
        evaluator.close()
        store.close()


def test_an_agent_reply_recorded_while_the_timer_is_evaluated_makes_its_unless_hold(
    tmp_path, chatra
):
    snapshot, evaluator, store, processor, _ = _setup(tmp_path, chatra)
    try:
        _deliver(store, processor, snapshot, at(chat_started(1), T0))
        runner = TimerRunner(
            store,
            lambda: snapshot,
            evaluator,
            owner="test:1",
            now=lambda: T0 + timedelta(minutes=6),
        )
        evaluator.meanwhile = lambda: _deliver(
            store, processor, snapshot, agent_reply(1, T0 + timedelta(minutes=5, seconds=30))
        )
        fired = runner.fire_due()
        assert evaluator.meanwhile is None
        assert [f.outcome for f in fired] == ["unless"]
        with store.transaction() as state:
            (timer,) = state.timers()
            assert timer.status == "unless"
            assert state.jobs(event_id=timer.by_event or "timer:1") == []
    finally:
        evaluator.close()
        store.close()
