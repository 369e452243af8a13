"""The dispatcher's lanes: the jobs of one destination or conversation, run one at a time.

A lane is a job's destination when its action is paced, else its event's conversation; the
dispatcher runs each lane's jobs in one task, oldest first (see :mod:`rulekit.runtime.dispatcher`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rulekit.event import Event
from rulekit.store.records import EventRecord, Job


@dataclass
class Lane:
    """The claimed jobs of one lane (``Job.lane``, else its destination), oldest first, with
    the task that runs them and the events their actions emitted so far."""

    key: str
    queue: deque[tuple[Job, EventRecord | None]] = field(default_factory=deque)
    emitted: list[Event] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    waiting: bool = False
    """Whether the lane waits for its destination's or service's turn (a rate limit, a
    Retry-After): no call of it is under way."""
    call_ends: float | None = None
    """While a call of the lane is under way: the ``time.monotonic()`` by which it ends at the
    latest (its action's own bound), so a shutdown waits for it rather than cut it off."""


def lane_key(job: Job) -> str:
    """The lane ``job`` runs in."""
    return job.lane or job.destination


class WorkTime:
    """How long the dispatcher has had a lane at work since it last recorded an attempt: the
    time during which at least one lane was neither waiting for its turn (a rate limit, a
    service's Retry-After) nor for its retry's time. ``/healthz`` calls it a stall past
    ``server.stall_after``; time spent waiting what a service asked is not counted, so a lane
    back from a long wait is not stalled by the moment it takes to go on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._working = 0
        self._since: float | None = None
        self._total = 0.0

    def start(self) -> None:
        """A lane starts working (it was created, or its wait is over)."""
        if self._working == 0:
            self._since = self.clock()
        self._working += 1

    def stop(self) -> None:
        """A lane stops working (it waits, or it has ended)."""
        self._working -= 1
        if self._working == 0 and self._since is not None:
            self._total += self.clock() - self._since
            self._since = None

    def progress(self) -> None:
        """An attempt was recorded: the count starts again."""
        self._total = 0.0
        if self._since is not None:
            self._since = self.clock()

    def seconds(self) -> float:
        """Seconds some lane has worked since the last recorded attempt."""
        since = self._since
        return self._total + (self.clock() - since if since is not None else 0.0)
