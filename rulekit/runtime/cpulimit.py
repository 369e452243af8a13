"""One event's evaluation within ``processing.event_cpu`` outside the daemon's workers.

The daemon evaluates in worker processes that a profiling timer stops once an event has used
its CPU budget (:mod:`rulekit.runtime.worker`). The dry run and rule test suites
(:mod:`rulekit.runtime.pipeline`) evaluate in their own process: without the same limit, an
event whose every rule spends its own budget (0.5 s each, :mod:`rulekit.expr.budget`) took
that many times longer, where the daemon would have set the event aside after 2 s.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class EventOverBudget(BaseException):
    """An event's evaluation used up its CPU budget (a ``BaseException``: no rule's handler
    takes it for the failure of its own condition or template)."""


def _over(signum: int, frame: FrameType | None) -> None:
    raise EventOverBudget


@contextlib.contextmanager
def cpu_limited(seconds: float) -> Iterator[None]:
    """Raise :class:`EventOverBudget` in the block once the process has used ``seconds`` of
    CPU in it, as the daemon's worker does. Signals reach the main thread only: elsewhere the
    block runs without the limit (each rule's own budget still holds)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGPROF, _over)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
