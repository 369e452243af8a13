"""Group commit: work submitted together shares a transaction run off the event loop, each piece
gets its own outcome, and a caller cancelled meanwhile never leaves a transaction running."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from rulekit.runtime.commit import GroupCommit
from rulekit.store.base import JournaledState
from rulekit.store.sqlite import SQLiteStore


class CountingStore(SQLiteStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions = 0
        self.threads: set[str] = set()

    def transaction(self):  # type: ignore[no-untyped-def]
        self.transactions += 1
        self.threads.add(threading.current_thread().name)
        return super().transaction()


def test_work_submitted_together_shares_a_transaction_off_the_loop(tmp_path):
    store = CountingStore(tmp_path / "rulekit.sqlite3")

    def append(n: int):
        def work(state: JournaledState) -> int:
            return state.append_inbox("chat", b"{}", delivery_key=f"d{n}")[0]

        return work

    def broken(state: JournaledState) -> int:
        raise ValueError("this piece is broken")

    async def main() -> list[object]:
        commit = GroupCommit(store)
        commit.start()
        try:
            return await asyncio.gather(
                *(commit.run(append(n)) for n in range(5)),
                commit.run(broken),
                return_exceptions=True,
            )
        finally:
            await commit.aclose()

    try:
        outcomes = asyncio.run(main())
        assert outcomes[:5] == [1, 2, 3, 4, 5]
        assert isinstance(outcomes[5], ValueError)
        # together first, then each piece alone once the broken one failed them all
        assert store.transactions == 1 + 6
        assert threading.current_thread().name not in store.threads
        with store.transaction() as state:
            assert len(state.inbox_items()) == 5
    finally:
        store.close()


def test_a_cancelled_caller_waits_for_its_transaction_to_end(tmp_path):
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    started, release = threading.Event(), threading.Event()

    def slow(state: JournaledState) -> int:
        started.set()
        release.wait(10)
        return state.append_inbox("chat", b"{}")[0]

    async def main() -> None:
        commit = GroupCommit(store)
        commit.start()
        try:
            caller = asyncio.create_task(commit.run(slow))
            await asyncio.to_thread(started.wait, 10)
            (runner,) = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_run"]
            runner.cancel()
            caller.cancel()
            await asyncio.sleep(0.05)
            assert not runner.done()  # still waiting for the transaction in its thread
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await runner
            with pytest.raises(asyncio.CancelledError):
                await caller
        finally:
            release.set()
            await commit.aclose()

    try:
        asyncio.run(main())
        with store.transaction() as state:
            assert len(state.inbox_items()) == 1  # the transaction ran to its commit
    finally:
        store.close()


def test_closing_ends_the_threads_transactions_run_in(tmp_path):
    store = CountingStore(tmp_path / "rulekit.sqlite3")

    async def main() -> None:
        commit = GroupCommit(store)
        commit.start()
        await commit.run(lambda state: state.append_inbox("chat", b"{}"))
        await commit.aclose()

    try:
        asyncio.run(main())
        (name,) = store.threads
        for thread in threading.enumerate():
            if thread.name == name:
                thread.join(5)
                assert not thread.is_alive()
    finally:
        store.close()


def test_a_piece_raising_stop_iteration_fails_alone_and_the_others_get_their_outcome(tmp_path):
    """A piece that lets ``StopIteration`` out (a ``next()`` on an empty iterator) cannot be
    raised into a future as it is: handing it over raised ``TypeError`` inside the group
    commit's task, which left every later piece of the batch waiting for ever (a webhook never
    answered) and showed only as "Task exception was never retrieved". It fails its caller
    with a ``RuntimeError``, the others get their outcome, and the group commit goes on."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")

    def append(n: int):
        def work(state: JournaledState) -> int:
            return state.append_inbox("chat", b"{}", delivery_key=f"d{n}")[0]

        return work

    def exhausted(state: JournaledState) -> int:
        state.append_inbox("chat", b"{}", delivery_key="lost")
        return next(iter(()))

    async def main() -> tuple[list[asyncio.Task[int]], int]:
        commit = GroupCommit(store)
        commit.start()
        try:
            works = [append(0), exhausted, append(1), append(2)]
            callers = [asyncio.create_task(commit.run(work)) for work in works]
            async with asyncio.timeout(10):  # not for ever, should the pieces be left waiting
                await asyncio.wait(callers)
                later = await commit.run(append(3))
            return callers, later
        finally:
            await commit.aclose()

    try:
        callers, later = asyncio.run(main())
        assert all(caller.done() for caller in callers)
        assert [c.result() for i, c in enumerate(callers) if i != 1] == [1, 2, 3]
        error = callers[1].exception()
        assert isinstance(error, RuntimeError) and isinstance(error.__cause__, StopIteration)
        assert later == 4
    finally:
        store.close()
