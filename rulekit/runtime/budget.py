"""Running blocking work (loading rules on reload) with a time budget that never blocks later work.

A thread cannot be stopped from outside. :func:`run_within` therefore runs the work in a thread
of its own and waits at most ``budget`` seconds: past that, the caller gets
:class:`OverBudget` at once (and can release its locks), while the thread finishes in the
background and its result, or error, is dropped. The next call starts afresh.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rulekit.errors import RulekitError

T = TypeVar("T")


class OverBudget(RulekitError):
    """The work did not finish within its budget."""


async def run_within(budget: float, function: Callable[..., T], *args: Any, what: str) -> T:
    """``function(*args)`` in a new daemon thread; its result, or :class:`OverBudget` (saying
    ``what`` took too long) when it has not finished after ``budget`` seconds."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the caller gave up on it: drop the late result
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # handed to the caller, who decides
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name=f"rulekit {what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, budget)
    except TimeoutError:
        raise OverBudget(
            f"{what} took over {budget:g} s and was abandoned; nothing of it is applied"
        ) from None
