"""A timer whose triggering event or conversation no longer loads (a record written by an
older rulekit, or one an erasure left unreadable) ends as an ``error`` with the reason; the
other timers of the claim fire. Before, the exception ended the daemon's timer task: no timer
fired any more, and after a restart the same record stopped it again."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta

from daemons import chat_started, write_setup
from test_timers_replay import TIMED, at

from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def test_a_timer_whose_records_no_longer_load_is_an_error_and_the_others_fire(
    tmp_path, chatra
) -> None:
    config = write_setup(tmp_path, TIMED, chatra=chatra)
    snapshot = load_snapshot(config)
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
        provider = snapshot.providers["online-chat"]
        for n in (1, 2, 3):
            body = at(chat_started(n), T0 + timedelta(seconds=n))
            with store.transaction() as state:
                key = provider.conversation_key(json.loads(body))
                state.append_inbox("online-chat", body, conversation_key=key)
        while processor.process_round(snapshot)[1]:
            pass
        with sqlite3.connect(tmp_path / "rulekit.sqlite3") as db:
            # visitor 1's conversation and visitor 3's event hold what this rulekit cannot read
            (data,) = db.execute(
                "SELECT data FROM conversations WHERE key = 'client00000001'"
            ).fetchone()
            db.execute(
                "UPDATE conversations SET data = ? WHERE key = 'client00000001'",
                (json.dumps({**json.loads(data), "from_a_later_version": True}),),
            )
            (data,) = db.execute(
                "SELECT data FROM events WHERE event_id = 'online-chat:msg:msg00000003'"
            ).fetchone()
            db.execute(
                "UPDATE events SET data = ? WHERE event_id = 'online-chat:msg:msg00000003'",
                (json.dumps({**json.loads(data), "from_a_later_version": True}),),
            )
        clock[0] = T0 + timedelta(minutes=6)
        fired = runner.fire_due()
        outcomes = {f.timer.conversation_id: (f.outcome, f.reason) for f in fired}
        unreadable = "the triggering event or its conversation cannot be read (ValidationError)"
        assert outcomes == {
            "online-chat:client00000001": ("error", unreadable),
            "online-chat:client00000002": ("fired", ""),
            "online-chat:client00000003": ("error", unreadable),
        }
        with store.transaction() as state:
            assert [t.status for t in state.timers()] == ["error", "fired", "error"]
        assert runner.fire_due() == []  # nothing left claimed or pending
    finally:
        evaluator.close()
        store.close()


def test_a_bug_while_firing_costs_a_pause_not_the_timers_task(tmp_path, chatra) -> None:
    """An unexpected exception in a round (here the daemon's report of what fired) is logged
    with its traceback and the runner goes on: the task used to end, and no later timer fired
    until a restart."""
    config = write_setup(tmp_path, TIMED, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    clock = [T0]
    reports: list[list[str]] = []

    def on_fired(fired: list) -> None:
        reports.append([f.timer.conversation_id for f in fired])
        if len(reports) == 1:
            raise RuntimeError("a bug in the report")

    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        runner = TimerRunner(
            store,
            lambda: snapshot,
            evaluator,
            owner="test:1",
            now=lambda: clock[0],
            on_fired=on_fired,
        )
        provider = snapshot.providers["online-chat"]
        for n, started in ((1, T0), (2, T0 + timedelta(minutes=2))):
            body = at(chat_started(n), started)
            with store.transaction() as state:
                key = provider.conversation_key(json.loads(body))
                state.append_inbox("online-chat", body, conversation_key=key)
        while processor.process_round(snapshot)[1]:
            pass

        def statuses() -> list[str]:
            with store.transaction() as state:
                return [t.status for t in reversed(state.timers())]

        async def scenario() -> None:
            clock[0] = T0 + timedelta(minutes=6)  # visitor 1's timer is due
            task = asyncio.create_task(runner.run())
            while statuses() != ["fired", "pending"]:
                await asyncio.sleep(0.02)
            clock[0] = T0 + timedelta(minutes=8)  # and now visitor 2's
            runner.wake()
            try:
                async with asyncio.timeout(30):
                    while statuses() != ["fired", "fired"] and not task.done():
                        runner.wake()
                        await asyncio.sleep(0.05)
                assert not task.done(), task.exception()
                assert statuses() == ["fired", "fired"]
            finally:
                runner.stop()
                await asyncio.wait_for(task, 30)

        asyncio.run(scenario())
        assert reports == [["online-chat:client00000001"], ["online-chat:client00000002"]]
    finally:
        evaluator.close()
        store.close()
