"""The dispatcher's lanes: the jobs of one destination or conversation, run one at a time.

A lane is a job's destination when its action is paced, else its event's conversation; the
dispatcher runs each lane's jobs in one task, oldest first (see :mod:`rulekit.runtime.dispatcher`).
"""

from __future__ import annotations

import asyncio
from collections import deque
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


def lane_key(job: Job) -> str:
    """The lane ``job`` runs in."""
    return job.lane or job.destination
