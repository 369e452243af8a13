"""The dispatcher: executes the outbox's action jobs, with retries, pacing and dead letters.

**Lanes.** Claimed jobs are queued in *lanes*, each run by its own task, one job at a time:

* a job whose action is paced (Slack, Telegram: :meth:`Action.pacing` is not empty) goes to the
  lane of its destination (``job.destination``: a Slack channel, a Telegram chat), so calls to
  one destination keep their order and respect its rate limits and pauses, while other
  destinations flow (no head-of-line blocking across destinations);
* any other job (``autoreply``, ``assign``, ``play_sound``) goes to the lane of its event, so an
  event's actions run in plan order (an ``autoreply`` after an ``assign`` is sent as the newly
  assigned agent), and different events run in parallel.

At most ``dispatcher.concurrency`` jobs execute at once.

**Retries.** A retryable failure (:class:`~rulekit.errors.RetryableActionError`, a timeout, an
unexpected exception) is retried after an exponential backoff with full jitter
(``uniform(0, min(backoff_max, backoff_base * 2**(attempt-1)))``), never sooner than the
service's Retry-After or flood-control wait; the :class:`~rulekit.pacing.Pacer` also pauses the
destination (or the whole bot, for a service-wide limit) for that long, so nothing is sent into
the window. The lane waits for the retry before its next job, keeping the destination's order.
A job out of budget (``max_attempts`` attempts, or older than ``max_age``) or failing
permanently is **dead-lettered**: kept with its error, counted, published to the console
(``dead_letter``), and retryable (``requeue_job``).

**Durability.** Each attempt is recorded (``record_attempt``) together with the events the
action emitted (``assigned``), which are evaluated like inbox events, in one transaction. A job
is claimed with a lease: when a daemon dies mid-call, the job is claimed again once the lease
runs out and is sent again (at-least-once). A job recorded ``done`` is never sent again.
Slack and Telegram take no idempotency key, so a crash can duplicate a message: at most one
duplicate per crash per job that was in flight at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from pydantic import ValidationError

from rulekit.actions.base import ActionContext
from rulekit.errors import ActionError, StoreUnavailable
from rulekit.event import Event
from rulekit.pacing import Pace, Pacer
from rulekit.runtime import planning
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.planning import Prepared, Processed, StateChanged
from rulekit.runtime.processor import owner_name, report
from rulekit.runtime.snapshot import Snapshot
from rulekit.runtime.worker import Evaluation, Refusal
from rulekit.store.base import JournaledState
from rulekit.store.records import EventRecord, Job, Outcome

logger = logging.getLogger("rulekit.dispatcher")

DEFAULT_LEASE = 60.0
"""Seconds a claimed job is held; after a crash it is retried once this has passed."""
TIMEOUT_GRACE = 5.0
"""Seconds past an action's own timeout before the dispatcher gives up on the call."""
IDLE_POLL = 1.0


@dataclass
class Lane:
    key: str
    queue: deque[tuple[Job, EventRecord | None]] = field(default_factory=deque)
    emitted: list[Event] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


@dataclass
class Decision:
    outcome: Outcome
    error: str | None = None
    result: Any = None
    retry_in: float | None = None


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt - 1, 62)))


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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
        self.rng = rng or random.Random()
        self.owner = owner_name()
        self._lanes: dict[str, Lane] = {}
        self._known: set[int] = set()
        self._executing = 0
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._slots: asyncio.Semaphore | None = None
        self._pausing = 0
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
                    delay = min(max(delay * 2, 0.5), 30.0)
                    log(logger, logging.ERROR, f"cannot claim jobs: {exc}", retry_in=delay)
                    await self._sleep(delay)
                    continue
            for job, record in claimed:
                if job.id in self._known:
                    continue
                self._known.add(job.id)
                self._enqueue(job, record)
            self.metrics.outbox_depth.set(len(self._known))
            if len(claimed) < capacity or capacity <= 0:
                await self._sleep(IDLE_POLL)

    def _claimer(self, limit: int) -> Callable[[JournaledState], Any]:
        owner, lease = self.owner, self.lease

        def claim(state: JournaledState) -> list[tuple[Job, EventRecord | None]]:
            jobs = state.claim_jobs(owner, lease=lease, limit=limit)
            records: dict[str, EventRecord | None] = {}
            out = []
            for job in jobs:
                if job.event_id not in records:
                    records[job.event_id] = state.get_event(job.event_id)
                out.append((job, records[job.event_id]))
            return out

        return claim

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    # lanes -----------------------------------------------------------------------------------
    def _lane_key(self, job: Job) -> str:
        action = self.snapshot().engine.actions.get(job.action)
        if action is not None:
            try:
                if action.pacing(action.Params.model_validate(job.params)):
                    return f"destination:{job.destination}"
            except ValidationError:
                pass
        return f"event:{job.event_id}"

    def _enqueue(self, job: Job, record: EventRecord | None) -> None:
        key = self._lane_key(job)
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
                    if decision.outcome != "retry" or decision.retry_in is None:
                        break
                    job = replace(job, attempts=job.attempts + 1)
                    await self._pause(decision.retry_in)
                lane.queue.popleft()
                self._known.discard(job.id)
                self.metrics.outbox_depth.set(len(self._known))
        finally:
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            for job, _ in lane.queue:  # stopping: handed back by release_claims
                self._known.discard(job.id)

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
    async def _attempt(self, job: Job, record: EventRecord | None, lane: Lane) -> Decision:
        snapshot = self.snapshot()
        emitted: list[Event] = []
        started = time.monotonic()
        decision = await self._execute(job, record, lane, snapshot, emitted)
        log(
            logger,
            logging.INFO if decision.outcome == "done" else logging.WARNING,
            f"job {job.id} {job.action}: {decision.outcome}",
            job_id=job.id,
            event_id=job.event_id,
            rule=job.rule,
            destination=job.destination,
            attempt=job.attempts + 1,
            ms=round((time.monotonic() - started) * 1000, 1),
            error=decision.error,
        )
        retry_at = (
            datetime.now(UTC) + timedelta(seconds=decision.retry_in)
            if decision.outcome == "retry" and decision.retry_in is not None
            else None
        )
        processed = await self._record(job, decision, retry_at, emitted, snapshot)
        self.last_progress = time.monotonic()
        self.metrics.actions.labels(job.action, decision.outcome).inc()
        message: dict[str, Any] = {
            "type": "action",
            "job_id": job.id,
            "event_id": job.event_id,
            "rule": job.rule,
            "action": job.action,
            "destination": job.destination,
            "attempt": job.attempts + 1,
            "outcome": decision.outcome,
            "error": decision.error,
        }
        self.feed.publish(message)
        if decision.outcome == "done":
            arrived = self.arrival(job.event_id) or (record.processed_at if record else None)
            if arrived is not None:
                seconds = (datetime.now(UTC) - arrived).total_seconds()
                self.metrics.latency.labels(job.action).observe(max(0.0, seconds))
        elif decision.outcome == "retry":
            self.metrics.retries.labels(job.action).inc()
        else:
            self.metrics.dead_letters.labels(job.action).inc()
            self.feed.publish({**message, "type": "dead_letter"})
        for result in processed:
            report(result, self.metrics, self.feed)
        if any(result.jobs for result in processed):
            self.wake()
        return decision

    async def _execute(
        self,
        job: Job,
        record: EventRecord | None,
        lane: Lane,
        snapshot: Snapshot,
        emitted: list[Event],
    ) -> Decision:
        action = snapshot.engine.actions.get(job.action)
        if action is None:
            return Decision("dead", f"action {job.action!r} is not installed")
        if record is None:
            return Decision("dead", f"event {job.event_id} is no longer recorded")
        try:
            params = action.Params.model_validate(job.params)
            event = Event.model_validate(record.data)
        except ValidationError as exc:
            return Decision("dead", f"the job's data no longer validates: {exc}")
        context = ActionContext(
            event=event,
            config=snapshot.config,
            provider=snapshot.providers.get(event.channel),
            store=self.store,
            publish=self.feed.publish,
            emitted=lane.emitted,
        )
        before = len(lane.emitted)
        assert self._slots is not None
        paces = action.pacing(params)
        try:
            await self._shared_pace(paces)
            async with self.pacer.acquire(paces), self._slots:
                self._executing += 1
                try:
                    async with asyncio.timeout(action.timeout + TIMEOUT_GRACE):
                        result = await action.execute(params, context)
                finally:
                    self._executing -= 1
        except ActionError as exc:
            if exc.retry_after and paces and self.shares_pacing:
                try:
                    await self._pause_shared(paces, exc.scope, exc.retry_after)
                except StoreUnavailable:  # this daemon's own pacer still pauses
                    log(logger, logging.WARNING, "could not share a Retry-After pause")
            if not exc.retryable:
                return Decision("dead", exc.message)
            return self._retry(job, record, exc.message, exc.retry_after)
        except TimeoutError:
            return self._retry(job, record, f"no answer within {action.timeout:g} s", None)
        except Exception as exc:  # a bug in an action: keep the traceback, retry within budget
            log(logger, logging.ERROR, f"job {job.id} {job.action} raised", exc_info=True)
            return self._retry(job, record, f"{type(exc).__name__}: {exc}", None)
        emitted.extend(lane.emitted[before:])
        return Decision("done", result=_json_ready(result))

    @property
    def shares_pacing(self) -> bool:
        """Whether other daemons send through the same store (then pacing is agreed there)."""
        return bool(getattr(self.store, "shares_pacing", False))

    async def _shared_pace(self, paces: list[Pace]) -> None:
        """Wait for a send slot every daemon agrees on, for each rate-limited key (PostgreSQL
        with several daemons); the in-process pacer still orders this daemon's own calls."""
        if not self.shares_pacing:
            return
        for pace in paces:
            if pace.limit is None:
                continue
            spacing = pace.limit.period / pace.limit.count

            def reserve(state: JournaledState, key: str = pace.key, gap: float = spacing) -> float:
                return state.reserve_pace(key, gap)

            wait = await self.commit.run(reserve)
            if wait > 0:
                await asyncio.sleep(wait)

    async def _pause_shared(self, paces: list[Pace], scope: str, seconds: float) -> None:
        """Tell every daemon about a Retry-After: the keys of ``scope`` (else the destination)."""
        keys = [p.key for p in paces if p.scope == scope] or [paces[0].key]

        def pause(state: Any) -> None:
            for key in keys:
                state.pause_pace(key, seconds)

        await self.commit.run(pause)

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

    async def _record(
        self,
        job: Job,
        decision: Decision,
        retry_at: datetime | None,
        emitted: list[Event],
        snapshot: Snapshot,
    ) -> list[Processed]:
        prepared: Prepared | None = None
        answer: list[Evaluation] | Refusal = []

        def work(state: JournaledState) -> list[Processed]:
            state.record_attempt(
                job.id,
                decision.outcome,
                error=decision.error,
                result=decision.result,
                retry_at=retry_at,
            )
            if prepared is None:
                return []
            return planning.record(state, prepared, answer, inbox_id=None)

        delay = 0.5
        while True:
            try:
                if emitted and self.evaluator is not None:
                    # events the action emitted are evaluated like inbox events: outside the
                    # transaction, in the evaluation worker
                    prepared = await anyio.to_thread.run_sync(
                        planning.prepare, self.store, None, emitted
                    )
                    answer = await anyio.to_thread.run_sync(
                        self.evaluator.evaluate, prepared.request
                    )
                return await self.commit.run(work)
            except StateChanged:
                continue
            except StoreUnavailable as exc:
                if self._stopping:
                    raise
                log(logger, logging.ERROR, f"cannot record job {job.id}: {exc}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

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
