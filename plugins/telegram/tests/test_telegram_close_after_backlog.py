"""``close_after`` and a backlog: a message the user wrote (and the daemon acknowledged) before
the chat's idle timer fell due, not processed yet when it does, keeps the chat open: the timer
waits for it, and the message moves the timer on. Before, the timer closed the chat first, and
the message then reopened it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import Updates
from telegram_daemon import write_setup
from telegram_samples import ANN


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


def test_a_message_received_before_close_after_ran_out_keeps_the_chat_open(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    updates = Updates()
    start = datetime.fromtimestamp(updates.date, UTC)
    clock = [start]
    provider = snapshot.providers["telegram"]
    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        runner = TimerRunner(
            store, lambda: snapshot, evaluator, owner="test:1", now=lambda: clock[0]
        )

        def receive(update: dict[str, object], when: datetime) -> None:
            body = json.dumps(update).encode()
            with store.transaction() as state:
                key = provider.conversation_key(json.loads(body))
                state.append_inbox("telegram", body, conversation_key=key, now=when)

        def process() -> None:
            while processor.process_round(snapshot)[1]:
                pass

        def events() -> list[str]:
            with store.transaction() as state:
                records = state.conversation_events("telegram", "telegram:111")
                return [record.event for record in records][::-1]

        receive(updates.message(ANN, "Hi"), start)
        process()
        updates.date += 29 * 60  # 29 minutes later, one minute before close_after runs out
        again = updates.message(ANN, "Still there?")
        receive(again, start + timedelta(minutes=29))
        clock[0] = start + timedelta(minutes=31)  # processing is behind: not processed yet
        assert runner.fire_due() == []
        process()
        assert runner.fire_due() == []
        assert events() == ["created", "message"]  # never closed
        with store.transaction() as state:
            (timer,) = [t for t in state.timers() if t.status == "pending"]
        written = datetime.fromtimestamp(again["message"]["date"], UTC)  # type: ignore[index]
        assert timer.due == written + timedelta(minutes=30)
    finally:
        evaluator.close()
        store.close()
