"""No lost wake-ups: work that arrives while a worker loop is busy looking for work (the
processor's round, the dispatcher's job claim, the timer runner's look at the next timer) is
taken up when that look ends, not after the loop's idle poll.

Each test sets the poll to an hour, so a lost wake-up leaves the work undone well past the
generous liveness timeout, and has the work arrive, with its wake-up, just after the
worker's look (its store transaction) ends and before its turn does: a store whose next
transaction runs a hook once it has ended, in the worker's thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemons import AUTOREPLY_RULES, chat_started, write_setup

from rulekit.runtime import dispatcher as dispatcher_module
from rulekit.runtime import processor as processor_module
from rulekit.runtime import timers as timers_module
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.dispatcher import Dispatcher
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import Snapshot, load_snapshot
from rulekit.store.base import JournaledState
from rulekit.store.sqlite import SQLiteStore

CHANNEL = "online-chat"
HOUR = 3600.0
LIVENESS = 30.0
TIMED = """\
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: 5m
  do:
    - autoreply: {text: "Sorry for the wait, {{ client.display_name }}"}
"""


class HookedStore(SQLiteStore):
    """A SQLite store that runs ``after`` (once, in the worker's thread) when its next
    transaction has ended: the work arrives just after the worker looked for it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.after: Callable[[], None] | None = None

    @contextlib.contextmanager
    def _hooked(self) -> Iterator[JournaledState]:
        after, self.after = self.after, None
        with super().transaction() as state:
            yield state
        if after is not None:
            after()

    def transaction(self) -> AbstractContextManager[JournaledState]:  # type: ignore[override]
        return self._hooked()


def on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> None:
    """Run ``call`` on ``loop`` from a worker thread and wait until it has run: the wake-up
    is delivered before the worker's look for work ends."""
    ran = threading.Event()

    def run() -> None:
        call()
        ran.set()

    loop.call_soon_threadsafe(run)
    assert ran.wait(LIVENESS)


def append(store: SQLiteStore, snapshot: Snapshot, body: bytes) -> None:
    provider = snapshot.providers[CHANNEL]
    with store.transaction() as state:
        state.append_inbox(
            CHANNEL, body, conversation_key=provider.conversation_key(json.loads(body))
        )


def inbox_done(folder: Path) -> bool:
    """Whether an inbox item is done (read on a connection of its own: not a transaction of
    the store under test)."""
    conn = sqlite3.connect(folder / "state.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM inbox WHERE status = 'done'").fetchone()[0] > 0
    finally:
        conn.close()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(LIVENESS):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.contextmanager
def site(
    folder: Path, chatra, rules: str = AUTOREPLY_RULES
) -> Iterator[tuple[HookedStore, Snapshot, Evaluator]]:
    config = write_setup(folder, rules, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = HookedStore(folder / "state.sqlite3")
    try:
        yield store, snapshot, evaluator
    finally:
        evaluator.close()
        store.close()


def test_an_item_appended_while_a_round_runs_is_processed_without_the_idle_poll(
    tmp_path, chatra, monkeypatch
):
    monkeypatch.setattr(processor_module, "IDLE_POLL", HOUR)
    with site(tmp_path, chatra) as (store, snapshot, evaluator):

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            processor = Processor(
                store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
            )

            def arrive() -> None:  # the webhook of another request, after the round's claim
                append(store, snapshot, chat_started(1))
                on_loop(loop, processor.wake)

            # the round's claim of the (empty) inbox: the item arrives just after it
            store.after = arrive
            task = asyncio.create_task(processor.run())
            try:
                await until(lambda: inbox_done(tmp_path))
            finally:
                processor.stop()
                await task

        asyncio.run(scenario())


def test_a_job_enqueued_while_jobs_are_claimed_is_executed_without_the_idle_poll(
    tmp_path, chatra, monkeypatch
):
    monkeypatch.setattr(dispatcher_module, "IDLE_POLL", HOUR)
    with site(tmp_path, chatra) as (store, snapshot, evaluator):
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        append(store, snapshot, chat_started(1))

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            commit = GroupCommit(store)
            commit.start()
            dispatcher = Dispatcher(
                commit, lambda: snapshot, metrics=Metrics(), feed=LiveFeed(), evaluator=evaluator
            )

            def enqueue() -> None:  # the processor records the event's job after the claim
                assert processor.process_round(snapshot)[1] == 1
                on_loop(loop, dispatcher.wake)

            # the dispatcher's claim (its first transaction) finds nothing; the job comes next
            store.after = enqueue
            task = asyncio.create_task(dispatcher.run())
            try:
                await until(lambda: bool(chatra.sent))
            finally:
                await dispatcher.stop()
                await task
                await commit.aclose()

        asyncio.run(scenario())


def test_a_timer_set_while_the_next_due_is_read_is_fired_without_the_long_sleep(
    tmp_path, chatra, monkeypatch
):
    monkeypatch.setattr(timers_module, "MAX_SLEEP", HOUR)
    with site(tmp_path, chatra, TIMED) as (store, snapshot, evaluator):
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        append(store, snapshot, chat_started(1))
        later = datetime.now(UTC) + timedelta(hours=1)  # the timer is due by then
        fired: list[object] = []

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            runner = TimerRunner(
                store,
                lambda: snapshot,
                evaluator,
                owner="test:1",
                on_fired=fired.extend,
                now=lambda: later,
            )

            def set_timer() -> None:  # the processor records the timer after the read
                assert processor.process_round(snapshot)[1] == 1
                on_loop(loop, runner.wake)

            # the runner's read of the next due timer (its first transaction) finds none
            store.after = set_timer
            task = asyncio.create_task(runner.run())
            try:
                await until(lambda: bool(fired))
            finally:
                runner.stop()
                await task

        asyncio.run(scenario())


def test_jobs_beyond_what_the_dispatcher_may_hold_are_claimed_as_room_is_made(
    tmp_path, chatra, monkeypatch
):
    # holding all it may (64 jobs at concurrency 1), the dispatcher claims the rest as the
    # first jobs finish, not after the idle poll
    monkeypatch.setattr(dispatcher_module, "IDLE_POLL", HOUR)
    config = write_setup(tmp_path, chatra=chatra, dispatcher={"concurrency": 1})
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(tmp_path / "state.sqlite3")
    jobs = 70
    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        for n in range(jobs):
            append(store, snapshot, chat_started(n))
        while processor.process_round(snapshot)[1]:
            pass

        async def scenario() -> None:
            commit = GroupCommit(store)
            commit.start()
            dispatcher = Dispatcher(
                commit, lambda: snapshot, metrics=Metrics(), feed=LiveFeed(), evaluator=evaluator
            )
            task = asyncio.create_task(dispatcher.run())
            try:
                await until(lambda: len(chatra.sent) >= jobs)
            finally:
                await dispatcher.stop()
                await task
                await commit.aclose()

        asyncio.run(scenario())
    finally:
        evaluator.close()
        store.close()
