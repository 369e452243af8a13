"""The dispatcher: executes the outbox's action jobs, with retries, pacing and dead letters.

**Lanes.** Every job has a lane (:attr:`Job.lane <rulekit.store.records.Job.lane>`, chosen by
:meth:`Action.lane <rulekit.actions.base.Action.lane>`): a paced action's destination (a Slack
channel, a Telegram chat), else the event's conversation. Claimed jobs are queued in the lane
of the same name, run by its own task, one job at a time, oldest first; so are they across
daemons, because the store hands a lane to one claimer at a time (:meth:`Journal.claim_jobs`).
Calls to one destination keep their order and its rate limits, a conversation's replies keep
theirs (an ``autoreply`` after an ``assign`` of the same plan is sent as the newly assigned
agent), and other lanes flow (no head-of-line blocking). At most ``dispatcher.concurrency``
calls are under way at once.

**Durability.** Each attempt is recorded (``record_attempt``) together with the events the
action emitted (``assigned``), which are evaluated like inbox events, in one transaction. When a
daemon dies, its claims run out with their lease and its lanes are claimed again; a call it had
started is counted as an interrupted attempt and made again (at-least-once). A job recorded
``done`` is never sent again. Slack, Telegram and Chatra take no idempotency key, so a crash can
duplicate a message: only one whose call had started and whose outcome was not recorded, at
most ``dispatcher.concurrency`` per crashed daemon. Nothing short of a crash leaves a made call
unrecorded: when the emitted events cannot be evaluated or recorded, the outcome is recorded
without their evaluation, or without them (:func:`~rulekit.runtime.outcomes.record_outcome`).

**Failures.** A lane never dies with its jobs: an unexpected exception (a bug, a database
refusing a write) is logged with its traceback and the job tried again after a pause, like
after a store blip; a lane that cannot make progress shows in :meth:`Dispatcher.stalled`.

One job's call is :mod:`rulekit.runtime.calls`; the claims, which start the calls that may go
at once, :mod:`rulekit.runtime.claims`; when a failure is retried, :mod:`rulekit.runtime.retries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from rulekit.actions.base import is_changes_lane
from rulekit.actions.pacing import Pacer
from rulekit.channels.hookrunner import HookRunner
from rulekit.errors import StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.calls import RELOADED, TIMEOUT_GRACE, JobCalls, as_stored
from rulekit.runtime.claims import Claimed, claimer
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.fence import Hold, lease_clock
from rulekit.runtime.lanes import Lane, WorkTime, lane_key
from rulekit.runtime.logs import log, log_id
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.outcomes import Decision, announce
from rulekit.runtime.owner import owner_name
from rulekit.runtime.sharedpace import retry_store, store_backoff
from rulekit.runtime.slots import CallSlots, ServiceShares
from rulekit.snapshot import Snapshot
from rulekit.store.base import JournaledState
from rulekit.store.records import EventRecord, Job

__all__ = ["DEFAULT_LEASE", "IDLE_POLL", "STOP_GRACE", "TIMEOUT_GRACE", "Dispatcher", "as_stored"]

logger = logging.getLogger("rulekit.dispatcher")

DEFAULT_LEASE = 60.0
"""Seconds a claimed job is held; after a crash it is retried once this has passed."""
IDLE_POLL = 1.0
HELD_BYTES = 16 * 1024 * 1024
"""Bytes of event data (as stored: JSON text) kept for the jobs the dispatcher holds, together.
The others' events are read from the store when their job's turn comes: while a service is
paused, 256 held jobs of events from 4 MiB bodies would otherwise hold 1 GB."""
STOP_GRACE = 10.0
"""Seconds a stopping dispatcher gives its lanes to finish what they do, beyond the calls under
way (which it waits for until they end: :meth:`Dispatcher.stop`)."""


class Dispatcher(JobCalls):
    """Runs action jobs from the outbox until stopped."""

    def __init__(
        self,
        commit: GroupCommit,
        snapshot: Callable[[], Snapshot],
        *,
        metrics: Metrics,
        feed: LiveFeed,
        pacer: Pacer | None = None,
        lease: float = DEFAULT_LEASE,
        arrival: Callable[[str], datetime | None] = lambda event_id: None,
        rng: random.Random | None = None,
        evaluator: Evaluator | None = None,
        hooks: HookRunner | None = None,
    ) -> None:
        self.commit = commit
        self.hooks = hooks if hooks is not None else HookRunner()
        """Where the providers' code a call waits for runs (off the event loop, bounded)."""
        self.evaluator = evaluator
        self.store = commit.store
        self.snapshot = snapshot
        self.metrics = metrics
        self.feed = feed
        self.pacer = pacer if pacer is not None else Pacer()  # (an idle pacer is falsy)
        self.lease = lease
        self.arrival = arrival
        self.recorded_event: Callable[[str], Event | None] = lambda event_id: None
        """The event of a job as this daemon's processor recorded it, when it still has it
        (:meth:`rulekit.runtime.processor.Processor.recorded_event`)."""
        self.on_timers: Callable[[], None] = lambda: None
        self.on_changes: Callable[[], None] = lambda: None
        """Called as the outcome of a job of a conversation's changes is recorded: its
        ``updated`` events are, and what they caused (the processor may wait for them)."""
        """Called when the events an action emitted set a timer (the timer runner's wake)."""
        self.rng = rng or random.Random()
        self.owner = owner_name()
        self._lanes: dict[str, Lane] = {}
        self._events: dict[str, tuple[Event | dict[str, Any], int]] = {}
        """Events of the jobs held (validated at their first job's turn, see
        :meth:`_held_event`), each with its size; together at most :data:`HELD_BYTES`."""
        self._event_bytes = 0
        self._holding: Counter[str] = Counter()
        """Jobs held per event."""
        self._known: set[int] = set()
        self._prestarted: dict[int, float] = {}
        """Jobs whose call their claim started, with when the claim was sent."""
        """Held jobs whose call's start their claim recorded, each with a slot taken for it,
        until their call begins (:mod:`rulekit.runtime.claims`)."""
        self._calling: dict[int, Hold] = {}
        """Jobs whose calls are under way, with when their claims were last known held: their
        claims are renewed together
        (:meth:`~rulekit.runtime.calls.JobCalls._renew_claims`)."""
        self._renewer: asyncio.Task[None] | None = None
        self._full = False
        """Whether the last claim took all the room there was (more may be waiting)."""
        self._wakeup = asyncio.Event()
        self._claimed = asyncio.Event()
        """Set while no claim is under way (or its jobs are held)."""
        self._claimed.set()
        self._stopping = False
        self._slots: CallSlots | None = None
        self._shares: ServiceShares | None = None
        self.work = WorkTime()
        """How long lanes have worked since the last recorded attempt (:meth:`stalled`)."""
        self._shares_pacing = bool(getattr(self.store, "shares_pacing", False))
        self._claim_failed: float | None = None
        """Since when claiming jobs fails for a reason other than the store's absence."""

    def wake(self) -> None:
        """New jobs were enqueued."""
        self._wakeup.set()

    @property
    def held(self) -> int:
        """Jobs this dispatcher holds (executing or queued in a lane)."""
        return len(self._known)

    async def run(self) -> None:
        """Claim and execute jobs until :meth:`stop`."""
        self._slots = slots = CallSlots(self.settings.concurrency)
        self._shares = shares = ServiceShares(slots)
        delay = 0.0
        while not self._stopping:
            # cleared before the claim, not before the sleep: jobs enqueued while the claim
            # runs wake the sleep below instead of waiting out the idle poll
            self._wakeup.clear()
            if slots.size != self.settings.concurrency:  # reloaded
                slots.resize(self.settings.concurrency)
                shares.resized()
            capacity = max(self.settings.concurrency * 8, 64) - len(self._known)
            claimed = 0
            if capacity > 0:
                self._claimed.clear()
                try:
                    claimed = await self._claim(capacity)
                    delay = 0.0
                except StoreUnavailable as exc:
                    delay = store_backoff(delay)
                    log(logger, logging.ERROR, "cannot claim jobs", failure=exc, retry_in=delay)
                    await self._sleep(delay)
                    continue
                except Exception as exc:  # a bug: kept with its traceback; claimed again later
                    delay = store_backoff(delay)
                    log(
                        logger,
                        logging.ERROR,
                        f"cannot claim jobs: {type(exc).__name__}",
                        retry_in=delay,
                        exc_info=exc,
                    )
                    if self._claim_failed is None:
                        self._claim_failed = time.monotonic()
                    await self._sleep(delay)
                    continue
                finally:
                    self._claimed.set()
                self._claim_failed = None
            self.metrics.outbox_depth.set(len(self._known))
            # holding all it may: the first job to finish makes room (see _drop)
            self._full = capacity <= 0 or claimed >= capacity
            if claimed < capacity or capacity <= 0:
                await self._sleep(IDLE_POLL)

    async def _claim(self, capacity: int) -> int:
        """Claim up to ``capacity`` jobs and queue them in their lanes, with the free slots
        taken for the calls the claim may start (:mod:`rulekit.runtime.claims`); how many
        were claimed."""
        assert self._slots is not None
        # as many calls as may start at once, whatever their services: free slots, within what
        # the busiest service may still start (a claim cannot tell the services apart)
        assert self._shares is not None
        room = min(capacity, self._shares.room())
        reserved = 0 if self.shares_pacing else self._slots.take_free(room)
        try:
            budget = max(0, HELD_BYTES - self._event_bytes)
            since = lease_clock()
            claimed = await self.commit.run(self._claimer(capacity, budget, reserved))
            for job, record, event, started in claimed:
                if job.id in self._known:
                    continue
                if started:
                    self._prestarted[job.id] = since
                    reserved -= 1
                self._hold(job)
                if event is not None and record is not None:
                    self._keep(job.event_id, event, record.size)
                self._enqueue(job, record)
        finally:
            if reserved:
                self._slots.give_back(reserved)
        return len(claimed)

    def _claimer(
        self, limit: int, budget: int, starts: int
    ) -> Callable[[JournaledState], list[Claimed]]:
        """The claim of up to ``limit`` jobs (:func:`~rulekit.runtime.claims.claimer`),
        starting the calls of up to ``starts`` that may go at once: of a lane this dispatcher
        does not run, of an action that needs no fresh read of the conversation, to an idle
        destination."""
        owner, lease, recorded_event = self.owner, self.lease, self.recorded_event
        if not starts:
            return claimer(owner, lease, limit, budget, recorded_event)
        busy = frozenset(self._lanes)
        actions = self.snapshot().engine.actions
        pacer, now = self.pacer, self.pacer.now()

        def may_start(job: Job) -> bool:  # (asked in the store's thread)
            key = lane_key(job)
            action = actions.get(job.action)
            if key in busy or action is None or action.sees_conversation:
                return False
            return pacer.idle(key, now)

        return claimer(
            owner, lease, limit, budget, recorded_event, starts=starts, may_start=may_start
        )

    def _keep(self, event_id: str, event: Event | dict[str, Any], size: int) -> None:
        """Keep the event of held jobs, when it fits in :data:`HELD_BYTES` with those kept."""
        if event_id in self._events or self._event_bytes + size > HELD_BYTES:
            return
        self._events[event_id] = (event, size)
        self._event_bytes += size

    def _unkeep(self, event_id: str) -> None:
        """Keep the event of held jobs no longer (its jobs read it again)."""
        kept = self._events.pop(event_id, None)
        if kept is not None:
            self._event_bytes -= kept[1]

    async def _held_event(self, record: EventRecord) -> Event:
        """The event of ``record``: kept for its jobs (validated once for all of them), handed
        over by this daemon's processor, else read from the store; kept for its other jobs
        when it fits (:meth:`_keep`)."""
        event_id = record.event_id
        kept = self._events.get(event_id)
        if kept is not None:
            found, size = kept
            if isinstance(found, Event):
                return found
            event = Event.model_validate(found)
            self._events[event_id] = (event, size)
            return event
        handed = self.recorded_event(event_id)
        if handed is not None:
            event, size = handed, record.size
        else:
            records = await retry_store(
                self.commit,
                lambda state: state.events_for_jobs([event_id]),
                f"read event {event_id}",
                stopping=self._stopped,
            )
            stored = records.get(event_id)
            if stored is None:
                raise LookupError(f"event {event_id} is no longer recorded")
            event, size = Event.model_validate(stored.data), stored.size
        if self._holding.get(event_id):  # (a job of it is held)
            self._keep(event_id, event, size)
        return event

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until woken since the loop's turn began."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    def _hold(self, job: Job) -> None:
        self._known.add(job.id)
        self._holding[job.event_id] += 1

    def _drop(self, job: Job) -> None:
        if job.id not in self._known:
            return
        self._known.discard(job.id)
        if self._full:
            self._full = False
            self._wakeup.set()
        self._holding[job.event_id] -= 1
        if self._holding[job.event_id] <= 0:
            del self._holding[job.event_id]
            self._unkeep(job.event_id)

    # lanes -----------------------------------------------------------------------------------
    def _enqueue(self, job: Job, record: EventRecord | None) -> None:
        key = lane_key(job)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key)
            lane.queue.append((job, record))
            self.work.start()
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"rulekit-lane-{key}")
        else:
            lane.queue.append((job, record))

    async def _run_lane(self, lane: Lane) -> None:
        try:
            while lane.queue and not self._stopping:
                job, record = lane.queue[0]
                delay = 0.0
                while not self._stopping:
                    try:
                        decision = await self._attempt(job, record, lane)
                    except Exception as exc:
                        # a bug: the lane goes on, with this job, after a pause (as after a
                        # store blip); it makes no progress meanwhile, which /healthz tells.
                        # A call whose outcome was recorded is not made again (begin_call)
                        delay = store_backoff(delay)
                        log(
                            logger,
                            logging.ERROR,
                            f"lane {log_id(lane.key)}: job {job.id} failed: {type(exc).__name__}",
                            job_id=job.id,
                            retry_in=delay,
                            exc_info=exc,
                        )
                        await self._pause(delay)
                        continue
                    if decision is None:  # not started: handed back, or stopping
                        break
                    if decision.outcome != "retry" or decision.retry_in is None:
                        break
                    job = replace(job, attempts=job.attempts + 1, result=decision.result)
                    with self._waiting(lane):
                        await self._pause(decision.retry_in)
                lane.queue.popleft()
                self._drop(job)
                self.metrics.outbox_depth.set(len(self._known))
        finally:
            self.work.stop()
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            for job, _ in lane.queue:  # stopping: handed back by release_claims
                self._drop(job)

    async def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.25, end - time.monotonic()))

    def stalled(self, limit: float) -> bool:
        """Whether jobs are held and lanes have worked ``limit`` seconds since the last recorded
        attempt, time spent waiting out a retry or for a destination's or service's turn not
        counted (:class:`~rulekit.runtime.lanes.WorkTime`), or claiming jobs has failed (a bug)
        for that long (``/healthz``). A lane whose job fails unexpectedly again and again
        records nothing: it counts as stalled."""
        now = time.monotonic()
        if self._claim_failed is not None and now - self._claim_failed > limit:
            return True  # no job can be claimed: none is seen waiting
        return self.held > 0 and self.work.seconds() > limit

    # one attempt -----------------------------------------------------------------------------
    async def _attempt(self, job: Job, record: EventRecord | None, lane: Lane) -> Decision | None:
        """One call of ``job`` and its recorded outcome; None when the call did not start
        (another daemon holds the job or an older job of its lane, or the daemon stops)."""
        emitted: list[Event] = []
        started = time.monotonic()
        try:
            decision: Decision | None = RELOADED
            while decision is RELOADED:
                snapshot = self.snapshot()
                # held until the outcome is recorded: a reload closes the replaced snapshot's
                # network clients only once no call goes through them (a call cut off so had
                # reached the service, failed here, and was sent again)
                with snapshot.users.held():
                    decision = await self._execute(job, record, lane, snapshot, emitted)
        except StoreUnavailable:  # stopping while the store is away: nothing was sent
            return None
        if decision is None:
            # (not its lane: made of the params, it may quote the client)
            log(logger, logging.INFO, f"job {job.id} handed back", job_id=job.id)
            # its claim may have been withdrawn by rulekit forget: the event kept for its jobs
            # is read again, as the erasure left it, when it is next claimed
            self._unkeep(job.event_id)
            return None
        announce(
            job,
            record,
            decision,
            metrics=self.metrics,
            feed=self.feed,
            arrived=self.arrival(job.event_id),
            ms=round((time.monotonic() - started) * 1000, 1),
            # whom a service's error, or the destination, may quote
            event=decision.event,
        )
        if any(result.jobs for result in decision.processed):
            self.wake()
        if any(result.timers for result in decision.processed):
            self.on_timers()
        if is_changes_lane(job.lane):
            self.on_changes()
        return decision

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop claiming; let the calls under way finish and record their outcomes; hand back
        the claims of jobs that were waiting.

        A call under way is waited for until it ends, however long its action's timeout
        (:func:`~rulekit.runtime.calls.call_bound`), and ``grace`` seconds more to record its
        outcome: a call cut off may have reached the service, and it would be made again after
        the restart (a message sent twice). Lanes doing anything else are given ``grace``."""
        self._stopping = True
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):  # the jobs whose calls a claim under way started
            await asyncio.wait_for(self._claimed.wait(), grace)
        for lane in self._lanes.values():
            if lane.waiting and lane.task is not None:  # no call under way: nothing to finish
                lane.task.cancel()
        pending = {lane.task for lane in self._lanes.values() if lane.task is not None}
        end = time.monotonic() + grace
        told = False
        while pending:
            calls = [lane.call_ends for lane in self._lanes.values() if lane.call_ends is not None]
            until = max([end, *(ends + grace for ends in calls)])
            if until > end and not told:
                told = True
                log(logger, logging.INFO, f"waiting for {len(calls)} calls under way to end")
            left = until - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=left)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        renewer, self._renewer = self._renewer, None  # no call is under way now
        if renewer is not None:
            renewer.cancel()
            await asyncio.wait((renewer,))
        unmade = sorted(self._prestarted)  # started by their claim, never called

        def hand_back(state: JournaledState) -> None:
            for job_id in unmade:
                state.cancel_call(job_id, self.owner)
            state.release_claims(self.owner)

        try:
            await self.commit.run(hand_back)
        except Exception as exc:  # they run out with their lease instead
            log(logger, logging.WARNING, "claims not handed back", failure=exc)
