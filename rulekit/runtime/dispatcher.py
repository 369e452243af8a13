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

**One call.** Before a call leaves, the dispatcher waits for the destination's pacing (in
process, and agreed with the other daemons through a store that :attr:`shares_pacing`), then
takes one of the ``concurrency`` slots and records durably that the call starts
(:meth:`Journal.start_call`: only the claimer of the oldest pending job of its lane may). The
slot is held until the call's outcome is recorded. So after a crash only the calls started and
not recorded — at most ``concurrency`` — are made again. A store that cannot be reached before
the call delays it (retried with a backoff, never counted as an attempt), and so does one the
action meets inside its call (``assign`` picks its agent in a transaction); after the call, the
outcome is recorded as soon as the store is back.

**Retries.** A retryable failure (:class:`~rulekit.errors.RetryableActionError`, a timeout, an
unexpected exception) is retried after an exponential backoff with full jitter (``uniform(0,
min(backoff_max, backoff_base * 2**(attempt-1)))``), never sooner than the service's Retry-After
or flood-control wait; the :class:`~rulekit.actions.pacing.Pacer` also pauses the destination
(or the whole service, for a service-wide limit: a Chatra 429 pauses every reply through that
channel) for that long, so nothing is sent into the window. The lane retries the job itself
before its next job, keeping its claim meanwhile (``record_attempt(hold=...)``), so no other
daemon takes it. A job out of budget (``max_attempts`` attempts, or older than ``max_age``) or
failing permanently is **dead-lettered**: kept with its error, counted,
published to the console (``dead_letter``), and retryable (``requeue_job``).

**Durability.** Each attempt is recorded (``record_attempt``) together with the events the
action emitted (``assigned``), which are evaluated like inbox events, in one transaction. When a
daemon dies, its claims run out with their lease and its lanes are claimed again; a call it had
started is counted as an interrupted attempt and made again (at-least-once). A job recorded
``done`` is never sent again. Slack, Telegram and Chatra take no idempotency key, so a crash can
duplicate a message: only one whose call had started and whose outcome was not recorded, at
most ``dispatcher.concurrency`` per crashed daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from rulekit.actions.base import ActionContext, delivery_id
from rulekit.actions.pacing import Pace, Pacer
from rulekit.errors import ActionError, StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.outcomes import Decision, announce, backoff, json_ready, record_outcome
from rulekit.runtime.processor import owner_name
from rulekit.runtime.sharedpace import (
    paused_keys,
    retry_store,
    share_pause,
    share_spacing,
    shared_wait,
    store_backoff,
)
from rulekit.snapshot import Snapshot
from rulekit.store.base import JournaledState, State
from rulekit.store.records import CallStart, EventRecord, Job

if TYPE_CHECKING:
    from rulekit.channels.base import Provider

logger = logging.getLogger("rulekit.dispatcher")

DEFAULT_LEASE = 60.0
"""Seconds a claimed job is held; after a crash it is retried once this has passed."""
TIMEOUT_GRACE = 5.0
"""Seconds past an action's own timeout before the dispatcher gives up on the call."""
IDLE_POLL = 1.0


def as_stored(state: State, event: Event) -> Event:
    """``event`` with its conversation as the store holds it now: for an action that
    :attr:`~rulekit.actions.base.Action.sees_conversation`, the earlier jobs of its lane (the
    earlier actions of its plan) applied. The event's own conversation when none is stored."""
    conversation_id = event.conversation.id
    if not conversation_id:
        return event
    try:
        found = state.find_conversation(event.channel, conversation_id)
    except NotImplementedError:
        return event
    if found is None:
        return event
    return event.model_copy(update={"conversation": found[1]})


@dataclass
class Lane:
    key: str
    queue: deque[tuple[Job, EventRecord | None]] = field(default_factory=deque)
    emitted: list[Event] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Dispatcher:
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
    ) -> None:
        self.commit = commit
        self.evaluator = evaluator
        self.store = commit.store
        self.snapshot = snapshot
        self.metrics = metrics
        self.feed = feed
        self.pacer = pacer or Pacer()
        self.lease = lease
        self.arrival = arrival
        self.recorded_event: Callable[[str], Event | None] = lambda event_id: None
        """The event of a job as this daemon's processor recorded it, when it still has it
        (:meth:`rulekit.runtime.processor.Processor.recorded_event`)."""
        self.rng = rng or random.Random()
        self.owner = owner_name()
        self._lanes: dict[str, Lane] = {}
        self._events: dict[str, Event] = {}
        """The events of the jobs held, validated once (see :meth:`_event`)."""
        self._holding: Counter[str] = Counter()
        """Jobs held per event."""
        self._known: set[int] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._slots: asyncio.Semaphore | None = None
        self._pausing = 0
        self._shares_pacing = bool(getattr(self.store, "shares_pacing", False))
        self.last_progress = time.monotonic()
        """When an attempt was last recorded."""

    @property
    def settings(self) -> Any:
        return self.snapshot().config.raw.dispatcher

    def wake(self) -> None:
        """New jobs were enqueued."""
        self._wakeup.set()

    @property
    def held(self) -> int:
        """Jobs this dispatcher holds (executing or queued in a lane)."""
        return len(self._known)

    async def run(self) -> None:
        """Claim and execute jobs until :meth:`stop`."""
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        delay = 0.0
        while not self._stopping:
            capacity = max(self.settings.concurrency * 8, 64) - len(self._known)
            claimed: list[tuple[Job, EventRecord | None]] = []
            if capacity > 0:
                try:
                    claimed = await self.commit.run(self._claimer(capacity))
                    delay = 0.0
                except StoreUnavailable as exc:
                    delay = store_backoff(delay)
                    log(logger, logging.ERROR, f"cannot claim jobs: {exc}", retry_in=delay)
                    await self._sleep(delay)
                    continue
            for job, record in claimed:
                if job.id in self._known:
                    continue
                self._hold(job)
                self._enqueue(job, record)
            self.metrics.outbox_depth.set(len(self._known))
            if len(claimed) < capacity or capacity <= 0:
                await self._sleep(IDLE_POLL)

    def _claimer(self, limit: int) -> Callable[[JournaledState], Any]:
        owner, lease = self.owner, self.lease

        def claim(state: JournaledState) -> list[tuple[Job, EventRecord | None]]:
            jobs = state.claim_jobs(owner, lease=lease, limit=limit)
            records = state.events_for_jobs([job.event_id for job in jobs]) if jobs else {}
            return [(job, records.get(job.event_id)) for job in jobs]

        return claim

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
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
        self._holding[job.event_id] -= 1
        if self._holding[job.event_id] <= 0:
            del self._holding[job.event_id]
            self._events.pop(job.event_id, None)

    # lanes -----------------------------------------------------------------------------------
    def _enqueue(self, job: Job, record: EventRecord | None) -> None:
        key = job.lane or job.destination
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key)
            lane.queue.append((job, record))
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"rulekit-lane-{key}")
        else:
            lane.queue.append((job, record))

    async def _run_lane(self, lane: Lane) -> None:
        try:
            while lane.queue and not self._stopping:
                job, record = lane.queue[0]
                while not self._stopping:
                    decision = await self._attempt(job, record, lane)
                    if decision is None:  # not started: handed back, or stopping
                        break
                    if decision.outcome != "retry" or decision.retry_in is None:
                        break
                    job = replace(job, attempts=job.attempts + 1)
                    await self._pause(decision.retry_in)
                lane.queue.popleft()
                self._drop(job)
                self.metrics.outbox_depth.set(len(self._known))
        finally:
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            for job, _ in lane.queue:  # stopping: handed back by release_claims
                self._drop(job)

    async def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self._pausing += 1
        try:
            while not self._stopping and time.monotonic() < end:
                await asyncio.sleep(min(0.25, end - time.monotonic()))
        finally:
            self._pausing -= 1

    def stalled(self, limit: float) -> bool:
        """Whether jobs are held, not all of them waiting out a retry, and no attempt has
        been recorded for ``limit`` seconds (``/healthz``)."""
        busy = len(self._lanes) > self._pausing
        return busy and self.held > 0 and time.monotonic() - self.last_progress > limit

    # one attempt -----------------------------------------------------------------------------
    async def _attempt(self, job: Job, record: EventRecord | None, lane: Lane) -> Decision | None:
        """One call of ``job`` and its recorded outcome; None when the call did not start
        (another daemon holds the job or an older job of its lane, or the daemon stops)."""
        snapshot = self.snapshot()
        emitted: list[Event] = []
        started = time.monotonic()
        try:
            decision = await self._execute(job, record, lane, snapshot, emitted)
        except StoreUnavailable:  # stopping while the store is away: nothing was sent
            return None
        if decision is None:
            log(logger, logging.INFO, f"job {job.id} handed back", job_id=job.id, lane=job.lane)
            return None
        announce(
            job,
            record,
            decision,
            metrics=self.metrics,
            feed=self.feed,
            arrived=self.arrival(job.event_id),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        if any(result.jobs for result in decision.processed):
            self.wake()
        return decision

    def _stopped(self) -> bool:
        return self._stopping

    async def _execute(
        self,
        job: Job,
        record: EventRecord | None,
        lane: Lane,
        snapshot: Snapshot,
        emitted: list[Event],
    ) -> Decision | None:
        action = snapshot.engine.actions.get(job.action)
        try:
            if action is None:
                raise LookupError(f"action {job.action!r} is not installed")
            if record is None:
                raise LookupError(f"event {job.event_id} is no longer recorded")
            params = action.Params.model_validate(job.params)
            event = self._event(record)
        except (LookupError, ValidationError) as exc:
            problem = str(exc)
            if isinstance(exc, ValidationError):
                problem = f"the job's data no longer validates: {exc}"
            return await self._conclude(job, Decision("dead", problem), emitted, snapshot)
        context = ActionContext(
            event=event,
            config=snapshot.config,
            provider=snapshot.providers.get(event.channel),
            store=self.store,
            publish=self.feed.publish,
            emitted=lane.emitted,
            delivery=delivery_id(job.event_id, job.id),
        )
        assert self._slots is not None
        paces = action.pacing(params) or self._conversation_paces(
            job, record, action, context.provider
        )
        async with self.pacer.acquire(paces) as slot:
            if self.shares_pacing:
                await shared_wait(self.commit, paces, stopping=self._stopped)
            while True:
                async with self._slots:  # held until the outcome is recorded
                    start = await self._begin(job, event, action, paces)
                    if start.started:
                        if start.conversation is not None:
                            context.event = event.model_copy(
                                update={"conversation": start.conversation}
                            )
                        call = (action, params, context, job, record)
                        return await self._started(call, lane, paces, slot, emitted, snapshot)
                if not start.wait or self._stopping:
                    return None  # handed back (or stopping)
                await asyncio.sleep(start.wait)  # a service-wide pause, agreed by every daemon

    async def _begin(self, job: Job, event: Event, action: Any, paces: list[Pace]) -> CallStart:
        """Record that the call starts, unless the service is paused, and read the conversation
        the action sees, in one store call."""
        owner, lease = self.owner, self.lease
        paused = paused_keys(paces) if self.shares_pacing else []
        conversation = (
            (event.channel, event.conversation.id)
            if action.sees_conversation and event.conversation.id
            else None
        )
        return await retry_store(
            self.commit,
            lambda state: state.begin_call(
                job.id, owner, lease=lease, paused=paused, conversation=conversation
            ),
            f"record the start of job {job.id}",
            stopping=self._stopped,
        )

    async def _started(
        self,
        call: tuple[Any, Any, ActionContext, Job, EventRecord],
        lane: Lane,
        paces: list[Pace],
        slot: Any,
        emitted: list[Event],
        snapshot: Snapshot,
    ) -> Decision:
        """The call, once its start is recorded, and its recorded outcome."""
        action, params, context, job, record = call
        before = len(lane.emitted)
        decision = await self._call(action, params, context, job, record)
        if self.shares_pacing:  # the next send counts from this answer
            await share_spacing(self.commit, paces, stopping=self._stopped)
        if decision.outcome == "done":
            emitted.extend(lane.emitted[before:])
        if decision.failure is not None:
            slot.report(decision.failure)
            failure = decision.failure
            if failure.retry_after and self.shares_pacing:
                await share_pause(
                    self.commit,
                    paces,
                    failure.scope,
                    failure.retry_after,
                    stopping=self._stopped,
                )
        return await self._conclude(job, decision, emitted, snapshot)

    def _event(self, record: EventRecord) -> Event:
        """The event of ``record``, validated once for all its jobs held here."""
        event = self._events.get(record.event_id)
        if event is None:
            event = self.recorded_event(record.event_id) or Event.model_validate(record.data)
            self._events[record.event_id] = event
        return event

    def _conversation_paces(
        self, job: Job, record: EventRecord, action: Any, provider: Provider | None
    ) -> list[Pace]:
        """The paces of an action with none of its own: its lane, and for one that calls the
        channel's service (a reply, a change of client data), the service: a service-wide
        Retry-After met by any such call (a Chatra 429) pauses all of them on that channel. A
        reply is also held to the channel's own rate limits (:attr:`Provider.reply_limits`):
        per conversation, and for the service."""
        limits = provider.reply_limits if provider is not None and action.client_facing else {}
        paces = [Pace(job.lane or job.destination, limits.get("conversation"))]
        if action.calls_channel_service:
            paces.append(Pace(f"service:{record.channel}", limits.get("service"), scope="service"))
        elif action.client_facing:
            paces.append(
                Pace(f"{job.action}:{record.channel}", limits.get("service"), scope="service")
            )
        return paces

    async def _call(
        self, action: Any, params: Any, context: ActionContext, job: Job, record: EventRecord
    ) -> Decision:
        delay = 0.0
        while True:
            try:
                async with asyncio.timeout(action.timeout + TIMEOUT_GRACE):
                    result = await action.execute(params, context)
            except StoreUnavailable as exc:
                # an action that uses the store itself (assign, update_client...) meets the
                # blip inside its call, before anything left: a store error, not an attempt
                if self._stopping:
                    raise
                delay = store_backoff(delay)
                log(logger, logging.ERROR, f"job {job.id}: {exc}", job_id=job.id, retry_in=delay)
                await asyncio.sleep(delay)
                continue
            except ActionError as exc:
                if not exc.retryable:
                    return Decision("dead", exc.message, failure=exc)
                decision = self._retry(job, record, exc.message, exc.retry_after)
                return replace(decision, failure=exc)
            except TimeoutError:
                return self._retry(job, record, f"no answer within {action.timeout:g} s", None)
            except Exception as exc:  # a bug in an action: keep the traceback, retry in budget
                log(logger, logging.ERROR, f"job {job.id} {job.action} raised", exc_info=True)
                return self._retry(job, record, f"{type(exc).__name__}: {exc}", None)
            return Decision("done", result=json_ready(result))

    @property
    def shares_pacing(self) -> bool:
        """Whether other daemons send through the same store (then pacing is agreed there)."""
        return self._shares_pacing

    def _retry(
        self, job: Job, record: EventRecord, error: str, retry_after: float | None
    ) -> Decision:
        settings = self.settings
        attempt = job.attempts + 1
        if attempt >= settings.max_attempts:
            return Decision("dead", f"{error} (gave up after {attempt} attempts)")
        delay = backoff(attempt, settings.backoff_base, settings.backoff_max, self.rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        age = (datetime.now(UTC) - record.processed_at).total_seconds()
        if age + delay > settings.max_age.total_seconds():
            return Decision("dead", f"{error} (gave up: the job would be older than max_age)")
        return Decision("retry", error, retry_in=delay)

    async def _conclude(
        self, job: Job, decision: Decision, emitted: list[Event], snapshot: Snapshot
    ) -> Decision:
        """Record the outcome (with the events it emitted), as soon as the store takes it; a
        retry keeps the job's claim, for the lane retries it itself."""
        retry_at = None
        if decision.outcome == "retry" and decision.retry_in is not None:
            retry_at = datetime.now(UTC) + timedelta(seconds=decision.retry_in)
        processed = await record_outcome(
            self.commit,
            self.evaluator,
            job,
            decision,
            emitted,
            retry_at=retry_at,
            hold=self.lease if retry_at is not None else None,
            stopping=self._stopped,
        )
        self.last_progress = time.monotonic()
        return replace(decision, processed=processed)

    # shutdown --------------------------------------------------------------------------------
    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let executing calls finish (up to ``grace`` seconds); hand back the
        claims of jobs that were waiting."""
        self._stopping = True
        self._wakeup.set()
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        try:
            await self.commit.run(lambda state: state.release_claims(self.owner))
        except Exception as exc:  # they run out with their lease instead
            log(logger, logging.WARNING, f"claims not handed back: {exc}")
