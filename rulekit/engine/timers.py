"""Timers, as the engine plans them: a timed rule (``after:``) that matches sets a timer
instead of planning its actions; ``cancel_on:`` events cancel one; when a timer is due, the
engine evaluates the rule's ``unless:`` against the conversation as it is then and plans the
actions (:meth:`rulekit.engine.engine.Engine.fire`).

The engine only says what to set, cancel and plan; keeping timers is the store's (the daemon)
or the dry run's business.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from rulekit.calendars import Calendar
from rulekit.rules.spec import Rule, Timing


@dataclass
class TimerSet:
    """Start a timer: ``rule`` fires for ``conversation_id`` at ``due``; a pending timer of
    the same rule and conversation is kept, unless ``restart``."""

    rule: str
    conversation_id: str
    due: datetime
    restart: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "conversation_id": self.conversation_id,
            "due": self.due.isoformat(),
            "restart": self.restart,
        }


@dataclass
class TimerCancel:
    """Cancel the pending timer of ``rule`` for ``conversation_id`` (the event is one of the
    rule's ``cancel_on``)."""

    rule: str
    conversation_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "conversation_id": self.conversation_id}


@dataclass
class Firing:
    """What a plan made by :meth:`~rulekit.engine.engine.Engine.fire` is about: the timer's
    rule, when it was due, when it fired, and whether it was dropped."""

    rule: str
    due: datetime
    fired_at: datetime
    outcome: str
    """``fired`` (its actions are planned), ``unless`` (the rule's ``unless:`` held),
    ``dropped`` (overdue by more than ``max_late``), ``gone`` (the rule no longer exists or is
    no longer timed), ``error`` (``unless`` failed)."""
    reason: str = ""

    @property
    def late(self) -> timedelta:
        return real_time_between(self.due, self.fired_at)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "due": self.due.isoformat(),
            "fired_at": self.fired_at.isoformat(),
            "late_seconds": round(self.late.total_seconds(), 3),
            "outcome": self.outcome,
            "reason": self.reason,
        }


def real_time_after(at: datetime, duration: timedelta) -> datetime:
    """``duration`` of real time after ``at``, in ``at``'s zone. (Python adds a duration to a
    time of a zone on its wall clock: a day from noon before the change to summer time is 23
    hours, an hour from 02:30 the night the clocks go back two.)"""
    return (at.astimezone(UTC) + duration).astimezone(at.tzinfo)


def real_time_between(start: datetime, end: datetime) -> timedelta:
    """The real time from ``start`` to ``end`` (two times of one zone subtract on the wall
    clock)."""
    return end.astimezone(UTC) - start.astimezone(UTC)


def due_time(timing: Timing, start: datetime, calendars: dict[str, Calendar]) -> datetime | None:
    """When a timer set at ``start`` is due: ``after`` of real time later, or ``after`` of
    open time later for business time (None: the calendar is not configured, or does not open
    within its search horizon)."""
    if timing.calendar is None:
        return real_time_after(start, timing.after)
    calendar = calendars.get(timing.calendar)
    return None if calendar is None else calendar.add(start, timing.after)


def cancellers(rules: list[Rule]) -> dict[str, list[Rule]]:
    """Timed rules by the event names that cancel their timers."""
    out: dict[str, list[Rule]] = {}
    for rule in rules:
        if rule.timing is not None:
            for name in rule.timing.cancel_on:
                out.setdefault(name, []).append(rule)
    return out


class _Due(Protocol):
    @property
    def due(self) -> datetime: ...


T = TypeVar("T", bound=_Due)
TimerKey = tuple[str, str]
"""A pending timer's (rule, conversation id): one pending timer each."""


class TimerQueue(Generic[T]):
    """The pending timers of a simulation (``rulekit test``, suites, ``rulekit replay``), by
    :data:`TimerKey`, with the earliest due first.

    A heap, so that finding what is due costs ``log n`` whatever the number pending: looking
    through every pending timer before each input made a dry run or a replay of many
    conversations with a long timer (``after: 1d``) quadratic. A timer replaced (``restart``)
    or cancelled leaves its heap entry behind, skipped when it comes up. Timers due at the same
    time come in the order their keys were first set, as a mapping of them would list them."""

    def __init__(self) -> None:
        self._timers: dict[TimerKey, tuple[int, T]] = {}
        self._heap: list[tuple[datetime, int, TimerKey]] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: object) -> bool:
        return key in self._timers

    def __iter__(self) -> Iterator[TimerKey]:
        return iter(self._timers)

    def set(self, key: TimerKey, timer: T) -> None:
        """Set ``key``'s timer (replacing a pending one, which keeps its place among equals)."""
        kept = self._timers.get(key)
        order = kept[0] if kept is not None else self._next
        self._next += kept is None
        self._timers[key] = (order, timer)
        # in UTC: times of one zone compare on its wall clock, in the hour the clocks go back too
        heapq.heappush(self._heap, (timer.due.astimezone(UTC), order, key))

    def cancel(self, key: TimerKey) -> None:
        self._timers.pop(key, None)

    def pop_due(self, until: datetime) -> T | None:
        """The earliest timer due by ``until``, taken out; None when none is."""
        while self._heap:
            due, order, key = self._heap[0]
            kept = self._timers.get(key)
            if kept is None or kept[0] != order or kept[1].due.astimezone(UTC) != due:
                heapq.heappop(self._heap)  # replaced or cancelled since
                continue
            if due > until:
                return None
            heapq.heappop(self._heap)
            del self._timers[key]
            return kept[1]
        return None
