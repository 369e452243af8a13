"""The journal's outbox: each recorded event's action jobs, their claims by lane, their calls
and attempts, named leases, and pacing agreed across daemons (see :class:`Outbox`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rulekit.event import Event
from rulekit.store.records import Job, JobSpec, JobStatus, NewEvent, Outcome


class Outbox(abc.ABC):
    """The outbox part of :class:`rulekit.store.base.Journal`: jobs with leases, calls, attempts."""

    # audit trail and outbox ------------------------------------------------------------------
    @abc.abstractmethod
    def record_event(
        self,
        event: Event,
        *,
        inbox_id: int | None,
        trace: Mapping[str, Any],
        jobs: Sequence[JobSpec] = (),
        now: datetime | None = None,
    ) -> bool:
        """Record a processed event and enqueue its plan's jobs (due at once).

        Returns false, recording and enqueueing nothing, when an event with this id was recorded
        before: a redelivered event never runs its actions twice.
        """

    def record_events(self, records: Sequence[NewEvent]) -> list[bool]:
        """:meth:`record_event` for several events, in order: whether each was recorded. Stores
        on a database server make it one statement."""
        return [
            self.record_event(r.event, inbox_id=r.inbox_id, trace=r.trace, jobs=r.jobs)
            for r in records
        ]

    @abc.abstractmethod
    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        """Claim up to ``limit`` pending jobs that are due, for ``lease`` seconds: the oldest
        first, or (a store that reads them by its due index, as PostgreSQL's does) the earliest
        due first — which differ only when more jobs are due than ``limit``; each lane still
        runs its jobs in id order (:meth:`start_call` only lets the oldest pending job of a lane
        start).

        Jobs are claimed **by lane** (:attr:`Job.lane`): a lane in which a pending job is held by
        another claimer (a live claim) is skipped whole, and of any other lane only the due
        *prefix* is claimed — its pending jobs in id order up to the first one that is not due
        (a retry waiting for its time). So one claimer at a time holds a lane and gets its jobs
        oldest first (``owner``'s own claims do not hold it back). A job is never held by two
        claimers at once; its claim ends with :meth:`record_attempt` or when the lease
        runs out.
        """

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        """Record, durably, that ``owner`` is about to call the service for a job; True when it
        may.

        It may when the job is pending, ``owner`` holds its claim (even past the lease, if
        nobody took it over), and no older job of its lane is pending; the claim is then renewed
        for ``lease`` seconds. When an older job of the lane is pending the claim is handed back
        and False returned (the lane's order comes first); when ``owner`` does not hold the
        claim, False. A call started by another claimer and never finished (it died) is counted
        as an attempt (:data:`~rulekit.store.records.INTERRUPTED`) first.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot record calls")

    def cancel_call(self, job_id: int, owner: str) -> bool:
        """Forget that ``owner`` is about to call the service for a job (:meth:`start_call`),
        when it has not made the call after all (it has to wait for its turn first); True when
        the job was pending with a call ``owner`` started. The claim is kept."""
        raise NotImplementedError(f"{type(self).__name__} cannot record calls")

    def hand_back_job(self, job_id: int, owner: str, *, wait: float, within: float) -> bool:
        """Give up ``owner``'s claim of a pending job that this daemon cannot run but another
        sharing the store may (see :mod:`rulekit.runtime.rollout`): nobody claims it for
        ``wait`` seconds (``owner`` for longer: another daemon gets it first), and no attempt
        is counted. False, changing nothing, when the job is
        no longer pending and ``owner``'s, or its event was recorded more than ``within``
        seconds ago; always False where the store is one daemon's own."""
        return False

    def applied_change(self, job_id: int) -> dict[str, Any] | None:
        """What a call of a pending job that changes stored state (``tag``, ``set``,
        ``assign``) changed, noted with the change (:meth:`note_applied_change`); None when no
        call of it has changed anything yet, or where the store keeps no calls."""
        return None

    def pending_lanes(self, lanes: Sequence[str]) -> set[str]:
        """Those of ``lanes`` that have a pending job (one waiting, claimed or being retried);
        empty where the store keeps no jobs."""
        return set()

    def job_ids(self, event_id: str) -> list[int]:
        """The ids of the jobs of event ``event_id``'s plan, in plan order; empty where the
        store keeps no jobs (then no change is made as its event is recorded: its job makes
        it when it runs)."""
        return []

    def job_place(self, job_id: int) -> tuple[int, int] | None:
        """The place of job ``job_id`` among its event's jobs (0 for the first) and the
        attempts it has recorded (:func:`~rulekit.actions.base.call_key`); None where the
        store keeps no jobs, or has no such job."""
        return None

    def note_applied_change(self, job_id: int, applied: dict[str, Any]) -> None:  # noqa: B027 - a store that keeps no calls notes nothing
        """Note, in the transaction making it, what a call of a pending job changed: when the
        daemon stops before the call's outcome is recorded, the call made again after the
        lease finds the change made and answers what it did (its ``updated`` event included)
        instead of finding nothing to change. The outcome's ``result`` replaces the note."""

    def renew_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        """Renew ``owner``'s claim of a job whose call it started (:meth:`start_call`) and has
        not recorded yet, for ``lease`` seconds from now; True when it still held it.

        A call may take longer than the lease (an action's timeout may be longer), and a claim
        that ran out while its call is under way would be taken by another claimer, who would
        make the call again: the caller renews it while the call lasts, so the lease ends a
        claim only when its claimer is gone."""
        raise NotImplementedError(f"{type(self).__name__} cannot record calls")

    @abc.abstractmethod
    def record_attempt(
        self,
        job_id: int,
        outcome: Outcome,
        *,
        error: str | None = None,
        result: Any = None,
        retry_at: datetime | None = None,
        hold: float | None = None,
        now: datetime | None = None,
        owner: str | None = None,
        seen: tuple[str, Sequence[str]] | None = None,
    ) -> bool:
        """Record one try of a job, end its call (:meth:`start_call`) and release its claim.

        ``done`` keeps ``result``; ``retry`` makes the job due again at ``retry_at`` (required);
        ``dead`` dead-letters it. A retry with ``hold`` keeps the claim until ``hold`` seconds
        after ``retry_at``: the claimer retries the job itself and no other may take it (or
        the rest of its lane) meanwhile. A job already done or dead keeps its status (a late
        report of a claim whose lease ran out is still recorded as an attempt). Unknown ids
        raise ``KeyError``.

        With ``owner``, the outcome of a call ``owner`` started: when another claimer has
        started the job's call since (``owner``'s claim ran out while it was held up, and the
        job was taken over), nothing is recorded and False is returned: the job, pending, is
        the other's, whose call is under way and whose outcome will be recorded. Nor is
        anything recorded, and False returned, for a job ``rulekit forget`` stopped while its
        call was under way (its error one of :data:`~rulekit.store.erasure.ERASURE_ERRORS`):
        what the service answered, and the events its action emitted, may quote the client as
        they were before the erasure; only its call is ended. True otherwise.

        ``seen`` (a channel and message ids: the messages the call created, a reply's) marks
        those ids seen (:meth:`~rulekit.store.state.State.mark_messages_seen`) when the outcome
        is recorded, in the same statement where the store can: the channel's echo of
        rulekit's own reply is then no event."""

    def tally_own_events(self, root: str, count: int) -> int | None:
        """Add ``count`` to the events rulekit's own actions caused under the recorded event
        ``root`` (:func:`~rulekit.event.own_root`) and return the new total; None when
        ``root`` is not recorded (retention purged it meanwhile): nothing to count by."""
        raise NotImplementedError(f"{type(self).__name__} cannot count events")

    @abc.abstractmethod
    def requeue_job(
        self, job_id: int, *, now: datetime | None = None, only_from: JobStatus | None = None
    ) -> bool:
        """Make a dead (or done) job pending and due at ``now``, e.g. from the console; whether
        it did. With ``only_from``, only a job in that status, checked by the change itself: of
        two retries of a dead letter at once, the second finds it pending (or sent already)
        and leaves it. :class:`KeyError` when no job has the id."""

    def release_claims(self, owner: str) -> int:
        """Hand back every pending inbox item and job ``owner`` holds, claimable at once (a
        daemon shutting down cleanly); return how many. A crashed daemon's claims run out with
        their lease instead."""
        raise NotImplementedError(f"{type(self).__name__} cannot release claims")

    # leases --------------------------------------------------------------------------------
    def hold_lease(
        self, name: str, owner: str, seconds: float, *, now: datetime | None = None
    ) -> bool:
        """Take the lease ``name`` for ``owner`` until ``seconds`` from now, or renew it; True
        when ``owner`` holds it, False when another owner holds it unexpired. One daemon of
        several does a thing at a time this way (e.g. polling a channel's updates); when it
        stops renewing, the lease runs out and another takes it."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold leases")

    def release_lease(self, name: str, owner: str) -> None:
        """Give up the lease ``name`` if ``owner`` holds it (another may take it at once)."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold leases")

    # pacing shared by daemons ----------------------------------------------------------------
    shares_pacing: bool = False
    """Whether several daemons use this store at once, so that per-destination pacing must be
    agreed through it (:meth:`reserve_pace`, :meth:`pause_pace`). A store one daemon owns
    (memory, SQLite) leaves pacing to that daemon's in-process
    :class:`rulekit.actions.pacing.Pacer`."""

    def reserve_pace(self, key: str, spacing: float) -> float:
        """Reserve the next send slot of ``key`` (slots at least ``spacing`` seconds apart,
        across every daemon); return how many seconds to wait before using it."""
        return 0.0

    def pause_pace(self, key: str, seconds: float) -> None:  # noqa: B027 - optional
        """Push ``key``'s next slot at least ``seconds`` from now (a Retry-After), for every
        daemon."""

    def paused_for(self, keys: Sequence[str]) -> float:
        """Seconds left of the longest pause (:meth:`pause_pace`) of ``keys``, reading only."""
        return 0.0

    def forget_paces(self, found: Callable[[str], bool]) -> int:
        """Forget the shared pacing of the keys ``found`` is true of (a destination made of a
        client's data, at their erasure); how many."""
        return 0

    def forget_past_paces(self) -> int:
        """Forget the shared pacing of the keys whose next slot passed over an hour ago (as
        retention purges): it is the same as none, the next reservation counting from now
        either way, and each destination and conversation ever paced would keep a row (its key
        made of the params, a chat id for one). How many."""
        return 0
