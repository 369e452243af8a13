"""Group commit: store work submitted from the event loop, run in shared transactions.

Every webhook must be on disk before its 200, and with ``synchronous=FULL`` each commit costs a
disk flush. Requests that arrive while a flush is under way wait for the next one together, so
the flushes per second stay bounded while the webhooks per second grow. The work runs in a
worker thread: the event loop never blocks on the store. A store that commits several
transactions concurrently (PostgreSQL, :attr:`Store.writers <rulekit.store.base.Store.writers>`)
gets up to that many under way at once, so that the round trips and the flush of one do not
hold up the work submitted meanwhile.

When a shared transaction fails because of one piece of work (not because the store is
unavailable), each piece is run again in its own transaction, so one bad piece never fails the
others; so it is when the database aborted the transaction for a conflict with another one (a
deadlock, a serialization failure: :class:`~rulekit.errors.StoreConflict`). Work that locks
rows other daemons lock in another order (pacing slots) asks to run ``alone``, in a
transaction of its own.

:attr:`GroupCommit.unavailable` (``/healthz``) says why the last transaction could not commit.
A later commit clears it when it changed a row, or when it is :data:`HOLD` seconds old: a
transaction that only reads commits on a full disk too, and the daemon's idle polls made one
every second, so ``/healthz`` said "ok" while every webhook was answered 503.

A bug in the group commit itself fails every piece of work of its batch with the error, which is
logged with its traceback: no caller waits for ever, and later work goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rulekit.errors import StoreConflict, StoreUnavailable
from rulekit.runtime.logs import log
from rulekit.store.base import JournaledState, JournaledStore

logger = logging.getLogger("rulekit.commit")

T = TypeVar("T")
Work = Callable[[JournaledState], Any]

MAX_BATCH = 512
MAX_CONFLICTS = 3
HOLD = 60.0
"""Seconds a store failure stays on ``/healthz`` unless a commit that changed a row clears it
first (one that only read does not: see the module's docstring)."""
"""How many times a piece of work aborted by a conflict is run again before it fails."""


class _Writers:
    """The threads the transactions run in, off the event loop: handed each over by a queue,
    the outcome handed back with one callback (``anyio.to_thread.run_sync`` spent about twice
    the CPU per transaction, which a busy daemon makes for nearly every webhook)."""

    def __init__(self, count: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._ended: dict[asyncio.Future[Any], asyncio.Future[None]] = {}
        """The end of the work of a cancelled caller, which waits for it (:meth:`run`)."""
        self._threads = [
            threading.Thread(target=self._serve, name="rulekit-commit", daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            loop, future, function, args = job
            try:
                outcome: tuple[bool, Any] = (True, function(*args))
            except BaseException as exc:  # handed to the caller, as it would have raised
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits now
                loop.call_soon_threadsafe(self._settle, future, outcome)
            del job, future, outcome  # no reference kept while waiting for the next

    def _settle(self, future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
        if future.done():  # its caller was cancelled: it waits for the end (run)
            ended = self._ended.get(future)
            if ended is None:  # (before the caller heard of its cancellation)
                ended = self._ended[future] = future.get_loop().create_future()
            ended.set_result(None)
            return
        _settle(future, outcome)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in one of the threads. A cancellation waits for it to end
        before it is raised: a transaction never runs on behind its caller (whose store may be
        closed next)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, function, args))
        try:
            # (awaited as it is: asyncio.wait, or a shield, cost a future and callbacks more
            # for every transaction)
            return await future
        except asyncio.CancelledError:
            if not future.cancelled():  # the work had ended: nothing to wait for
                raise
            # the cancellation cancelled the future: the thread tells the end all the same
            ended = self._ended.get(future)
            if ended is None:
                ended = self._ended[future] = loop.create_future()
            while not ended.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((ended,))
            del self._ended[future]
            raise

    def stop(self) -> None:
        """End the threads once the work handed over is done."""
        for _ in self._threads:
            self._queue.put(None)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # a future refuses it (TypeError): as a coroutine does
        failure = RuntimeError("the work raised StopIteration")
        failure.__cause__ = value
        future.set_exception(failure)
    else:
        future.set_exception(value)


class GroupCommit:
    """Runs ``work(state)`` callables in as few transactions as the load allows."""

    def __init__(self, store: JournaledStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0
        self._alone: set[asyncio.Future[Any]] = set()
        self.conflicts = 0
        """Transactions the database aborted for a conflict with another (each run again)."""
        self.unavailable: StoreUnavailable | None = None
        """Why the last transaction could not commit, until one that changed a row commits, or
        for :data:`HOLD` seconds (``/healthz``)."""
        self._failed_at = 0.0
        self._writers: _Writers | None = None

    def start(self) -> None:
        self._writers = _Writers(max(self.store.writers, 1))
        self._task = asyncio.create_task(self._loop(), name="rulekit-group-commit")

    async def run(self, work: Callable[[JournaledState], T], *, alone: bool = False) -> T:
        """Run ``work`` in a transaction and return its result once committed (``alone``: in a
        transaction of its own). Raises what ``work`` raised, or :class:`StoreUnavailable` when
        the store cannot commit."""
        if self._task is None or self._closing:
            raise StoreUnavailable("the daemon is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if alone:
            self._alone.add(future)
        self._pending.append((work, future))
        self._wakeup.set()
        return await future

    async def _loop(self) -> None:
        # up to ``store.writers`` transactions under way at once: works submitted while they
        # run wait for the next free one together
        free = asyncio.Semaphore(max(self.store.writers, 1))
        running: set[asyncio.Task[None]] = set()
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await free.acquire()
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                task = asyncio.create_task(self._run(batch, free))
                running.add(task)
                task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _run(
        self, batch: list[tuple[Work, asyncio.Future[Any]]], free: asyncio.Semaphore
    ) -> None:
        try:
            alone = [(w, f) for w, f in batch if f in self._alone]
            shared = [(w, f) for w, f in batch if f not in self._alone]
            self._alone.difference_update(f for _, f in alone)
            assert self._writers is not None
            outcomes = await self._writers.run(
                self._commit_all, [w for w, _ in shared], [w for w, _ in alone]
            )
            for (_, future), outcome in zip(shared + alone, outcomes, strict=True):
                _settle(future, outcome)
        except Exception as exc:
            # a bug here: every work of the batch fails with it (its caller answers an error
            # rather than wait for ever), it is logged, and the next batches go on
            log(
                logger,
                logging.ERROR,
                f"group commit failed: {type(exc).__name__}",
                works=len(batch),
                exc_info=exc,
            )
            for _, future in batch:
                _settle(future, (False, exc))
        finally:
            free.release()

    def _commit_all(self, shared: list[Work], alone: list[Work]) -> list[tuple[bool, Any]]:
        outcomes = self._commit(shared) if shared else []
        return outcomes + [self._commit([work])[0] for work in alone]

    def _commit(self, works: list[Work], conflicts: int = 0) -> list[tuple[bool, Any]]:
        try:
            with self.store.transaction() as state:
                values = [work(state) for work in works]
            self.commits += 1
            if self.unavailable is not None and (
                getattr(state, "wrote", None) is not False
                or time.monotonic() - self._failed_at > HOLD
            ):
                self.unavailable = None
            return [(True, value) for value in values]
        except StoreConflict as exc:
            self.conflicts += 1
            if len(works) > 1:  # alone, no piece can conflict with itself: run them so
                return [self._commit([work])[0] for work in works]
            if conflicts < MAX_CONFLICTS:
                return self._commit(works, conflicts + 1)
            return [(False, exc)]
        except StoreUnavailable as exc:
            self.unavailable, self._failed_at = exc, time.monotonic()
            return [(False, exc)] * len(works)
        except Exception as exc:
            if len(works) == 1:
                return [(False, exc)]
            return [self._commit([work])[0] for work in works]

    async def aclose(self) -> None:
        """Commit what was submitted, then stop accepting work."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._writers is not None:
            self._writers.stop()
