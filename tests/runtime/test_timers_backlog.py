"""A timer waits for its conversation's webhooks received before it fell due: an agent's
reply acknowledged in time but not processed yet (processing is behind) cancels it once
processed, as ``rulekit test`` has it, instead of the timer firing first ("Sorry for the wait"
after the agent answered). Conversations with nothing waiting fire on time, a webhook received
after the due time holds nothing back, and a timer waits at most five minutes past its due
time."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from daemons import chat_started, write_setup
from test_timers_daemon import agent_reply
from test_timers_replay import TIMED, at

from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import INBOX_WAIT, TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


@contextlib.contextmanager
def backlog(config: Path) -> Iterator[tuple[Any, ...]]:
    """A processor and a timer runner on ``config``'s store, the runner on a clock the test
    moves (``clock[0]``, from :data:`T0`), and ``receive(body, when)``: a webhook in the inbox,
    received then, not processed yet."""
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(config.parent / "rulekit.sqlite3")
    clock = [T0]
    provider = snapshot.providers["online-chat"]

    def receive(body: bytes, when: datetime) -> None:
        with store.transaction() as state:
            key = provider.conversation_key(json.loads(body))
            state.append_inbox("online-chat", body, conversation_key=key, now=when)

    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        runner = TimerRunner(
            store, lambda: snapshot, evaluator, owner="test:1", now=lambda: clock[0]
        )
        yield snapshot, store, processor, runner, clock, receive
    finally:
        evaluator.close()
        store.close()


def test_a_timer_waits_for_its_conversations_webhooks_received_before_it_fell_due(
    tmp_path, chatra
) -> None:
    config = write_setup(tmp_path, TIMED, chatra=chatra)  # max_late: 1h (the default)
    with backlog(config) as (snapshot, store, processor, runner, clock, receive):

        def process() -> None:
            while processor.process_round(snapshot)[1]:
                pass

        def statuses() -> dict[str, str]:
            with store.transaction() as state:
                return {t.conversation_id[-1]: t.status for t in state.timers()}

        for n in (1, 2, 3):
            receive(at(chat_started(n), T0), T0)
        process()  # three timers, due at 10:05
        reply = at(agent_reply(1), T0 + timedelta(minutes=4), ("messages", 0))
        receive(reply, T0 + timedelta(minutes=4))  # in time, not processed yet
        later = at(agent_reply(3), T0 + timedelta(minutes=5, seconds=30), ("messages", 0))
        receive(later, T0 + timedelta(minutes=5, seconds=30))  # after the due time

        clock[0] = T0 + timedelta(minutes=6)
        fired = runner.fire_due()
        assert sorted(f.timer.conversation_id[-1] for f in fired) == ["2", "3"]
        assert statuses() == {"1": "pending", "2": "fired", "3": "fired"}
        assert runner.fire_due() == []  # held a moment, then looked at again
        process()
        assert statuses()["1"] == "cancelled"
        clock[0] = T0 + timedelta(minutes=7)
        assert runner.fire_due() == []

        # a reply that stays unprocessed holds its timer back five minutes at most
        start = T0 + timedelta(minutes=10)
        receive(at(chat_started(4), start), start)
        process()
        receive(at(agent_reply(4), start + timedelta(minutes=4), ("messages", 0)), start)
        clock[0] = start + timedelta(minutes=5, seconds=INBOX_WAIT - 1)
        assert runner.fire_due() == []
        clock[0] = start + timedelta(minutes=5, seconds=INBOX_WAIT + 1)
        assert [f.outcome for f in runner.fire_due()] == ["fired"]


def test_a_timer_waits_half_its_max_late_at_most_never_to_be_dropped(tmp_path, chatra) -> None:
    """Waiting five minutes would have a timer of ``max_late: 1m`` dropped for lateness that
    only the wait caused."""
    config = write_setup(
        tmp_path, TIMED.replace("after: 5m", "after: 5m\n  max_late: 1m"), chatra=chatra
    )
    with backlog(config) as (snapshot, _store, processor, runner, clock, receive):
        for body, when in (
            (at(chat_started(1), T0), T0),
            (at(agent_reply(1), T0 + timedelta(minutes=4), ("messages", 0)), T0),
        ):
            receive(body, when)
        assert processor.process_round(snapshot)[1]  # the chat's start only: the lane's head
        clock[0] = T0 + timedelta(minutes=5, seconds=29)
        assert runner.fire_due() == []
        clock[0] = T0 + timedelta(minutes=5, seconds=31)
        assert [f.outcome for f in runner.fire_due()] == ["fired"]
