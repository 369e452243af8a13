"""Calls into a plugin's code while a request waits, off the event loop and within a budget.

A provider's methods are plugin code: one that blocks (a network call, a lock) or loops would
hold up every request of the daemon if it ran on the event loop. :class:`HookRunner` runs each
such call in a thread of the plugin's own and waits for it at most :data:`HOOK_BUDGET` seconds;
a call that has not answered by then is answered for (:class:`HookUnanswered`: the request
gets a 503 and is not acknowledged) and runs on in its thread. A plugin has at most
:data:`HOOKS_IN_FLIGHT` threads, its calls waiting for a free one within their budget: hooks
that never return hold that many threads, never more, and once every one of them is held by a
call over its budget, the plugin's next calls are refused at once, while other plugins' calls
go on.

The threads are the runner's own, not the default executor's: a plugin's stuck calls never
take the threads the store's and the daemon's own work run in.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from rulekit.channels.base import Provider

T = TypeVar("T")

HOOK_BUDGET = 2.0
"""Seconds a plugin's hook called while a request waits may take before the request is
answered without it (a 503 with ``Retry-After``)."""
HOOKS_IN_FLIGHT = 4
"""Threads one plugin's calls run in. Calls wait for a free one within their budget; once
that many calls run over their budget (all the threads held), the plugin's next calls are
refused at once (a 503) until one returns."""


class HookUnanswered(Exception):
    """A plugin's hook did not answer within its budget, or the plugin has too many calls
    under way; the message says which (without anything of the request)."""


class HookRefused(HookUnanswered):
    """The plugin's call was not started: as many of its calls as it may have run over their
    budget."""


class _Call:
    """One call handed to a plugin's threads."""

    __slots__ = ("args", "deliver", "finished", "function", "given_up", "running")

    def __init__(
        self,
        deliver: Callable[[tuple[bool, Any]], None],
        function: Callable[..., Any],
        args: tuple[Any, ...],
    ) -> None:
        self.deliver = deliver
        """Hands the outcome (returned: ``(True, value)``, raised: ``(False, exception)``) to
        the caller, from the plugin's thread."""
        self.function = function
        self.args = args
        self.running = False
        self.finished = False
        self.given_up = False
        """Its caller stopped waiting before it started (not started, then), or while it ran
        over its budget (it holds its thread until it returns)."""


class _Plugin:
    """One plugin's threads, the calls handed to them, and how many of those are under way
    (queued or running) and running over their budget."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.under_way = 0
        self.overdue = 0

    def submit(self, call: _Call, most: int) -> bool:
        """Hand ``call`` to a thread, unless ``most`` calls run over their budget (then every
        thread the plugin may have is held)."""
        with self.lock:
            if self.overdue >= most:
                return False
            self.under_way += 1
            more = self.under_way > len(self.threads) and len(self.threads) < most
        if more:
            thread = threading.Thread(
                target=self._serve, name=f"rulekit-hooks-{self.name}", daemon=True
            )
            self.threads.append(thread)
            thread.start()
        self.calls.put(call)
        return True

    def give_up(self, call: _Call, *, late: bool) -> None:
        """The caller stops waiting for ``call`` (``late``: over its budget)."""
        with self.lock:
            if call.given_up or call.finished:  # (finished: its outcome is on its way)
                return
            if not call.running:  # still queued: never started
                call.given_up = True
            elif late:  # running on: it holds its thread
                call.given_up = True
                self.overdue += 1

    def _serve(self) -> None:
        while (call := self.calls.get()) is not None:
            with self.lock:
                if call.given_up:  # nobody waits for it any more: not started
                    self.under_way -= 1
                    continue
                call.running = True
            try:
                outcome: tuple[bool, Any] = (True, call.function(*call.args))
            except BaseException as exc:  # handed to the caller, as it would have raised
                outcome = (False, exc)
            with self.lock:
                self.under_way -= 1
                call.finished = True
                if call.given_up:
                    self.overdue -= 1
            call.deliver(outcome)
            del call, outcome  # no reference kept while waiting for the next

    def stop(self) -> None:
        for _ in self.threads:
            self.calls.put(None)


class HookRunner:
    """Runs plugins' hooks for one daemon (:meth:`run`), each plugin in threads of its own."""

    def __init__(self, budget: float = HOOK_BUDGET, most: int = HOOKS_IN_FLIGHT) -> None:
        self.budget = budget
        self.most = most
        self._plugins: dict[str, _Plugin] = {}
        self._lock = threading.Lock()

    def _threads(self, plugin: str) -> _Plugin:
        with self._lock:  # (asked from the loop and from worker threads)
            threads = self._plugins.get(plugin)
            if threads is None:
                threads = self._plugins[plugin] = _Plugin(plugin)
            return threads

    async def run(self, plugin: str, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)``, plugin ``plugin``'s code, in one of its threads: what it
        returns or raises. Raises :class:`HookUnanswered` when it has not returned within the
        budget, or at once when the plugin has as many calls under way as it may."""
        threads = self._threads(plugin)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def deliver(outcome: tuple[bool, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits now
                loop.call_soon_threadsafe(_settle, future, outcome)

        call = _Call(deliver, function, args)
        if not threads.submit(call, self.most):
            raise HookRefused(
                f"the {plugin} plugin has {self.most} calls under way that did not answer"
            )
        expiry = loop.call_later(self.budget, _expire, threads, call, future, self.budget)
        try:
            return await future
        finally:
            expiry.cancel()
            if not future.done() or future.cancelled():  # the caller is gone
                threads.give_up(call, late=False)

    def call(self, plugin: str, function: Callable[..., T], *args: Any) -> T:
        """:meth:`run` for a caller that is a thread of its own (not the event loop), which
        waits for the answer: ``function(*args)`` in one of plugin ``plugin``'s threads, what
        it returns or raises; :class:`HookUnanswered` when it has not returned within the
        budget (it runs on in its thread), or at once when the plugin has as many calls under
        way as it may."""
        threads = self._threads(plugin)
        answered = threading.Event()
        outcomes: list[tuple[bool, Any]] = []

        def deliver(outcome: tuple[bool, Any]) -> None:
            outcomes.append(outcome)
            answered.set()

        call = _Call(deliver, function, args)
        if not threads.submit(call, self.most):
            raise HookRefused(
                f"the {plugin} plugin has {self.most} calls under way that did not answer"
            )
        if not answered.wait(self.budget):
            threads.give_up(call, late=True)
            if not answered.wait(0):  # (not answered as it was given up)
                raise HookUnanswered(f"the {plugin} plugin did not answer in {self.budget:g} s")
        ok, value = outcomes[0]
        del outcomes[:]
        if ok:
            return cast(T, value)
        raise value

    def close(self) -> None:
        """End the threads once their calls return (a call that never does keeps its thread,
        which does not hold the process up when it exits)."""
        for threads in self._plugins.values():
            threads.stop()
        self._plugins.clear()


def _expire(threads: _Plugin, call: _Call, future: asyncio.Future[Any], budget: float) -> None:
    if future.done():
        return
    threads.give_up(call, late=True)
    future.set_exception(
        HookUnanswered(f"the {threads.name} plugin did not answer in {budget:g} s")
    )


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # over its budget, or its caller gone
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # a future refuses it (TypeError): as a coroutine does
        failure = RuntimeError("the hook raised StopIteration")
        failure.__cause__ = value
        future.set_exception(failure)
    else:
        future.set_exception(value)


async def ask(hooks: HookRunner | None, provider: Provider, method: str, *args: Any) -> Any:
    """What ``provider``'s ``method`` answers to ``args``: the base class's own (the project's
    code) in place, a plugin's through ``hooks`` (raising :class:`HookUnanswered` when it does
    not answer in time); in place when ``hooks`` is None (a dry run, which has no loop to keep
    free)."""
    function = getattr(provider, method)
    if hooks is None or not overridden(provider, Provider, method):
        return function(*args)
    return await hooks.run(provider.name, function, *args)


def overridden(instance: object, base: type, name: str) -> bool:
    """Whether ``instance``'s class has its own method ``name`` rather than ``base``'s (a
    plugin's code, run through the runner; ``base``'s own is the project's, run in place)."""
    return getattr(type(instance), name, None) is not getattr(base, name, None)
