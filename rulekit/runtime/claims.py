"""The dispatcher's claims: jobs claimed with their events, and the calls that may go at once
started in the claim's own transaction.

A call's start is recorded durably before the call (:meth:`Journal.start_call
<rulekit.store.outbox.Outbox.start_call>`), with one of the ``concurrency`` slots held from
then until its outcome is recorded (:mod:`rulekit.runtime.calls`). For most jobs nothing lies
between their claim and their call: the first job of a lane this daemon does not run yet, of an
action that needs no fresh read of the conversation, whose destination's pacing is idle. When
the store is this daemon's alone (it does not :attr:`~rulekit.store.outbox.Outbox.shares_pacing`,
so no pacing is agreed in it and nobody else may take a lane over), the dispatcher takes the
free slots before it claims, and the claim's transaction records the start of up to that many
such jobs: one store call and one commit per job fewer, and the same guarantees — the start is
on disk before the call, and calls started without a recorded outcome never outnumber the
slots. A job started so that finds it must wait after all (a pause or limit of a key other
than its destination's) has its start withdrawn (:meth:`~rulekit.store.outbox.Outbox.cancel_call`)
and its slot given back before it waits, and then starts as any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from rulekit.event import Event
from rulekit.runtime.lanes import lane_key
from rulekit.runtime.slots import CallSlots
from rulekit.store.base import JournaledState
from rulekit.store.records import EventRecord, Job


class Claimed(NamedTuple):
    """A claimed job, its event's record (its ``data`` left empty) and its event: when this
    daemon's processor hands it over, the event itself (its data then left unread); else its
    data, when read within the claim's budget; else None (read at its job's turn)."""

    job: Job
    record: EventRecord | None
    event: Event | dict[str, Any] | None
    started: bool
    """Its call's start was recorded in the claim's transaction (it holds a taken slot)."""


def claimer(
    owner: str,
    lease: float,
    limit: int,
    budget: int,
    recorded_event: Callable[[str], Event | None],
    *,
    starts: int = 0,
    may_start: Callable[[Job], bool] = lambda job: False,
) -> Callable[[JournaledState], list[Claimed]]:
    """The claim of up to ``limit`` jobs for ``owner``, their events' data read while it fits
    ``budget`` bytes together, recording the start of up to ``starts`` of them: the oldest
    claimed job of each lane, when ``may_start`` (asked in the store's thread) says nothing is
    to wait for before its call."""

    def claim(state: JournaledState) -> list[Claimed]:
        jobs = state.claim_jobs(owner, lease=lease, limit=limit)
        if not jobs:
            return []
        events: dict[str, Event | dict[str, Any] | None] = {}
        for job in jobs:
            if job.event_id not in events:
                events[job.event_id] = recorded_event(job.event_id)
        held = [event_id for event_id, event in events.items() if event is not None]
        records = state.events_for_jobs(list(events), held=held, budget=budget)
        for event_id, record in records.items():
            if record.data:
                events[event_id] = record.data
                records[event_id] = replace(record, data={})  # kept once, by the dispatcher
        started: set[int] = set()
        lanes: set[str] = set()
        for job in jobs:
            if len(started) >= starts:
                break
            key = lane_key(job)
            if key in lanes:
                continue
            lanes.add(key)
            # (start_call also refuses a job with an older pending job in its lane)
            if may_start(job) and state.start_call(job.id, owner, lease=lease):
                started.add(job.id)
        return [
            Claimed(job, records.get(job.event_id), events[job.event_id], job.id in started)
            for job in jobs
        ]

    return claim


class TakenSlot:
    """A slot taken for a call its claim started (:meth:`CallSlots.take_free`), given back
    once."""

    def __init__(self, slots: CallSlots | None, since: float) -> None:
        self._slots = slots
        self.since = since
        """When its claim was sent (:func:`~rulekit.runtime.fence.lease_clock`)."""
        self.called = False
        """The call went (its outcome is recorded before the slot is given back)."""

    @property
    def held(self) -> bool:
        """Not given back yet."""
        return self._slots is not None

    def release(self) -> None:
        """Give the slot back (again: nothing)."""
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.give_back()
