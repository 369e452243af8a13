"""One call of an action job: pacing, a concurrency slot, its start and its outcome recorded.

**One call.** Before a call leaves, the dispatcher waits for the destination's pacing (in
process, and agreed with the other daemons through a store that :attr:`shares_pacing`), then
takes one of the ``concurrency`` slots and records durably that the call starts
(:meth:`Journal.start_call`: only the claimer of the oldest pending job of its lane may), unless
its claim did, with a slot taken for it (:mod:`rulekit.runtime.claims`). The slot is held, and
the job's claim renewed, until the call's outcome is recorded. So after a crash only the calls
started and not recorded — at most ``concurrency`` — are made again. A store that cannot be
reached before the call delays it (retried with a backoff, never counted as an attempt), and so
does one the action meets inside its call (``assign`` picks its agent in a transaction); after
the call, the outcome is recorded as soon as the store is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from rulekit.actions.base import ActionContext, delivery_id
from rulekit.actions.pacing import Pace, Pacer
from rulekit.channels.hookrunner import HookRunner, HookUnanswered, ask
from rulekit.engine.reasons import failure_reason
from rulekit.errors import ActionError, StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.callclaims import CallClaims
from rulekit.runtime.callpacing import CallPacing
from rulekit.runtime.changes import Changes
from rulekit.runtime.claims import TakenSlot
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.fence import Hold, lease_clock
from rulekit.runtime.lanes import Lane, WorkTime
from rulekit.runtime.logs import log
from rulekit.runtime.outcomes import (
    Decision,
    json_ready,
    kept_progress,
    progress_of,
    record_outcome,
)
from rulekit.runtime.retries import retry_decision
from rulekit.runtime.rollout import HAND_BACK, LEFT_TO_OTHERS
from rulekit.runtime.sharedpace import (
    paused_keys,
    retry_store,
    shared_wait,
    store_backoff,
)
from rulekit.runtime.slots import CallSlots, ServiceShares, service_of
from rulekit.snapshot import Snapshot
from rulekit.store.base import JournaledState, State
from rulekit.store.records import CallStart, EventRecord, Job

if TYPE_CHECKING:
    pass

logger = logging.getLogger("rulekit.dispatcher")

TIMEOUT_GRACE = 5.0
"""Seconds past an action's own timeout before the dispatcher gives up on the call."""


RELOADED = Decision("retry", "the configuration was reloaded before the call started")
"""What :meth:`JobCalls._execute` answers when the rules and config were reloaded while the
job waited for its turn: nothing was called or recorded, and the attempt begins again with the
new set, so the call goes with the configuration loaded when it leaves (a service's new keys,
a target's new URL), or not at all when its action is gone."""


def _never() -> bool:
    return False


def call_bound(action: Any, lease: float) -> float:
    """Seconds a call of ``action`` lasts at most: its timeout and the dispatcher's grace (the
    dispatcher's own timer ends it then, or the action's, :attr:`Action.bounds_calls`), or the
    job's lease for an action that waits for its turn inside the call within the lease
    (``email``)."""
    return max(float(action.timeout), lease) + TIMEOUT_GRACE


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


class JobCalls(CallClaims, CallPacing):
    """The dispatcher's calls: one job's call from its pacing to its recorded outcome.

    A part of :class:`rulekit.runtime.dispatcher.Dispatcher`, which sets what is declared here.
    """

    commit: GroupCommit
    evaluator: Evaluator | None
    store: Any
    snapshot: Callable[[], Snapshot]
    feed: LiveFeed
    pacer: Pacer
    hooks: HookRunner
    lease: float
    rng: random.Random
    owner: str
    recorded_event: Callable[[str], Event | None]
    work: WorkTime
    _held_event: Callable[[EventRecord], Awaitable[Event]]
    _prestarted: dict[int, float]
    _calling: dict[int, Hold]
    _renewer: asyncio.Task[None] | None
    _stopping: bool
    _slots: CallSlots | None
    _shares: ServiceShares | None
    _shares_pacing: bool

    @property
    def settings(self) -> Any:
        """The ``dispatcher`` settings of the configuration now loaded."""
        return self.snapshot().config.raw.dispatcher

    async def _execute(
        self,
        job: Job,
        record: EventRecord | None,
        lane: Lane,
        snapshot: Snapshot,
        emitted: list[Event],
    ) -> Decision | None:
        # started by its claim, with a slot taken for it (rulekit.runtime.claims)
        claimed = self._prestarted.pop(job.id, None)
        taken = TakenSlot(self._slots, claimed) if claimed is not None else None
        try:
            return await self._execute_call(job, record, lane, snapshot, emitted, taken)
        except Exception:
            if taken is not None and taken.held and not taken.called:  # (a bug before the call)
                with contextlib.suppress(Exception):
                    await self._withdraw(job)
            raise
        finally:
            if taken is not None:
                taken.release()

    async def _execute_call(
        self,
        job: Job,
        record: EventRecord | None,
        lane: Lane,
        snapshot: Snapshot,
        emitted: list[Event],
        taken: TakenSlot | None,
    ) -> Decision | None:
        action = snapshot.engine.actions.get(job.action)
        try:
            if action is None:
                raise LookupError(f"action {job.action!r} is not installed")
            if record is None:
                raise LookupError(f"event {job.event_id} is no longer recorded")
            params = action.Params.model_validate(job.params)
            context = await self._context(job, lane, snapshot, record)
        except (LookupError, ValidationError) as exc:
            if record is not None and await self._left_to_others(job, exc):
                return None
            return await self._unusable(job, exc, emitted, snapshot)
        own = action.pacing(params)
        paces = own or self._conversation_paces(job, record, action, context.provider)
        paces = paces + self._call_paces(action, params, context)
        service = service_of(paces, own, job.action)
        assert self._shares is not None
        if taken is not None:
            # nothing to wait for, and room in the service's share: the call goes
            if self.pacer.ready(paces) and self._shares.try_take(service):
                try:
                    async with self.pacer.acquire(paces) as slot:
                        taken.called = True
                        call = (action, params, context, job, record)
                        hold = Hold(taken.since, self.lease)
                        return await self._started(call, lane, paces, slot, emitted, snapshot, hold)
                finally:
                    self._shares.give_back(service)
            # it has to wait for its turn after all: not as a started call, nor with a slot
            await self._withdraw(job)
            taken.release()
        # waiting for its turn holds no event (those kept for the jobs held are within
        # HELD_BYTES): it is taken again when the turn comes
        del context
        assert self._slots is not None
        async with contextlib.AsyncExitStack() as paced:
            # waiting for the destination's or the service's turn (a rate limit, a
            # Retry-After) is not a stall (/healthz), and holds no call slot
            with self._waiting(lane):
                slot = await paced.enter_async_context(self.pacer.acquire(paces))
                if self.shares_pacing:
                    await shared_wait(self.commit, paces, stopping=self._stopped)
            while not self._stopping:
                if self.snapshot() is not snapshot:  # reloaded while it waited for its turn
                    return RELOADED
                # the service's share of the slots: a service that hangs holds up the calls
                # to it, not those to every other service (waiting holds no slot either)
                with self._waiting(lane):
                    await self._shares.take(service)
                try:
                    if self.snapshot() is not snapshot:  # reloaded while it waited
                        return RELOADED
                    async with self._slots:  # held until the outcome is recorded
                        try:
                            context = await self._context(job, lane, snapshot, record)
                        except (LookupError, ValidationError) as exc:
                            return await self._unusable(job, exc, emitted, snapshot)
                        since = lease_clock()
                        start = await self._begin(job, context.event, action, paces)
                        if start.started:
                            if start.conversation is not None:
                                context.event = context.event.model_copy(
                                    update={"conversation": start.conversation}
                                )
                            call = (action, params, context, job, record)
                            hold = Hold(since, self.lease)
                            return await self._started(
                                call, lane, paces, slot, emitted, snapshot, hold
                            )
                        del context  # a service-wide pause holds no event either
                finally:
                    self._shares.give_back(service)
                if not start.wait:
                    return None  # handed back
                with self._waiting(lane):  # a service-wide pause, agreed by every daemon
                    await asyncio.sleep(start.wait)
        return None  # stopping: the call did not start

    async def _unusable(
        self, job: Job, exc: Exception, emitted: list[Event], snapshot: Snapshot
    ) -> Decision | None:
        """A job that cannot be executed (its action gone, its event or data unreadable)
        recorded dead."""
        return await self._conclude(job, Decision("dead", _problem(exc)), emitted, snapshot)

    async def _left_to_others(self, job: Job, exc: Exception) -> bool:
        """Hand ``job`` back to the daemons sharing the store when this one cannot run it (its
        action not installed, its data not what this daemon's version of the action takes):
        an upgraded daemon may (:mod:`rulekit.runtime.rollout`). A daemon not upgraded yet
        used to dead-letter the jobs that only the upgraded ones could run."""
        if not self.store.shared:
            return False
        owner = self.owner

        def hand_back(state: JournaledState) -> bool:
            return state.hand_back_job(job.id, owner, wait=HAND_BACK, within=LEFT_TO_OTHERS)

        left = await retry_store(
            self.commit, hand_back, f"hand back job {job.id}", stopping=self._stopped
        )
        if left:
            log(
                logger,
                logging.INFO,
                f"job {job.id} {job.action}: left to the daemons that can run it: {_problem(exc)}",
                job_id=job.id,
                event_id=job.event_id,
                rule=job.rule,
            )
        return bool(left)

    async def _context(
        self, job: Job, lane: Lane, snapshot: Snapshot, record: EventRecord
    ) -> ActionContext:
        """What ``job``'s action sees: its event
        (:meth:`~rulekit.runtime.dispatcher.Dispatcher._held_event`) and the daemon's."""
        event = await self._held_event(record)
        return ActionContext(
            event=event,
            config=snapshot.config,
            provider=snapshot.providers.get(event.channel),
            store=self.store,
            publish=self.feed.publish,
            emitted=lane.emitted,
            delivery=delivery_id(job.event_id, job.id),
            job_id=job.id,
            lease=self.lease,
            progress=progress_of(job),
            hooks=self.hooks,
        )

    async def _sent(
        self, action: Any, context: ActionContext, result: Any
    ) -> tuple[str, tuple[str, ...]] | None:
        return await _sent_ids(self.hooks, action, context, result)

    @contextlib.contextmanager
    def _waiting(self, lane: Lane) -> Iterator[None]:
        """``lane`` waits for its destination's or service's turn (or its retry's time): it is
        not stalled (:meth:`Dispatcher.stalled`), and a shutdown need not wait for it."""
        self.work.stop()
        lane.waiting = True
        try:
            yield
        finally:
            lane.waiting = False
            self.work.start()

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

    async def _withdraw(self, job: Job) -> None:
        """Forget the start its claim recorded of ``job``'s call, which has to wait."""
        owner = self.owner
        await retry_store(
            self.commit,
            lambda state: state.cancel_call(job.id, owner),
            f"withdraw the start of job {job.id}",
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
        hold: Hold,
    ) -> Decision | None:
        """The call, once its start is recorded, and its recorded outcome; the job's claim is
        renewed until then (:meth:`_renew_claims`). None when the claim was found taken over
        before the call left (:meth:`_still_held`): nothing was called or recorded."""
        action, params, context, job, record = call
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_claims(), name="rulekit-claims")
        self._calling[job.id] = hold
        lane.call_ends = time.monotonic() + call_bound(action, self.lease)
        try:
            before = len(lane.emitted)
            decision = await self._call(action, params, context, job, record, hold)
            if decision is None:
                return None
            decision.event = context.event  # (a decision of its own: _call made it)
            if decision.outcome == "done":
                emitted.extend(lane.emitted[before:])
            try:
                await self._paced_after(decision, paces, slot)
            except Exception as exc:  # the call is made: its outcome is recorded all the same
                # (the store away while stopping, or a bug)
                log(logger, logging.ERROR, f"job {job.id}: pacing not updated", exc_info=exc)
            return await self._conclude(job, decision, emitted, snapshot, made=True)
        finally:
            lane.call_ends = None
            self._calling.pop(job.id, None)

    async def _call(
        self,
        action: Any,
        params: Any,
        context: ActionContext,
        job: Job,
        record: EventRecord,
        hold: Hold,
    ) -> Decision | None:
        """The call and what it came to; None, nothing called, when the job's claim was
        taken over before it left (:meth:`_still_held`)."""
        delay = 0.0
        while True:
            if not await self._still_held(job, hold):
                log(
                    logger,
                    logging.WARNING,
                    f"job {job.id}: its claim ran out while this daemon was held up and was"
                    " taken over: the call is left to the daemon that took it",
                    job_id=job.id,
                )
                return None
            try:
                if action.bounds_calls:  # its own timer ends the call: no second one
                    result = await action.execute(params, context)
                else:
                    async with asyncio.timeout(action.timeout + TIMEOUT_GRACE):
                        result = await action.execute(params, context)
            except StoreUnavailable as exc:
                # an action that uses the store itself (assign, update_client...) meets the
                # blip inside its call, before anything left: a store error, not an attempt
                if self._stopping:
                    raise
                delay = store_backoff(delay)
                log(
                    logger,
                    logging.ERROR,
                    f"job {job.id}",
                    failure=exc,
                    job_id=job.id,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            except ActionError as exc:
                progress = kept_progress(exc.progress or context.progress)
                if not exc.retryable:
                    return Decision("dead", exc.message, result=progress, failure=exc)
                decision = self._retry(job, record, exc.message, exc.retry_after)
                return replace(decision, result=progress, failure=exc)
            except TimeoutError:
                decision = self._retry(job, record, f"no answer within {action.timeout:g} s", None)
                return replace(decision, result=kept_progress(context.progress))
            except Exception as exc:  # a bug in an action: keep the traceback, retry in budget
                log(logger, logging.ERROR, f"job {job.id} {job.action} raised", exc_info=True)
                # the attempt's error is stored and shown (rulekit why, the console): it names
                # the exception, not its message, which may quote what the action was given
                decision = self._retry(job, record, type(exc).__name__, None)
                return replace(decision, result=kept_progress(context.progress))
            sent = await self._sent(action, context, result)
            return Decision("done", result=json_ready(result), sent=sent)

    def _retry(
        self, job: Job, record: EventRecord, error: str, retry_after: float | None
    ) -> Decision:
        return retry_decision(job, record, error, retry_after, settings=self.settings, rng=self.rng)

    async def _conclude(
        self,
        job: Job,
        decision: Decision,
        emitted: list[Event],
        snapshot: Snapshot,
        *,
        made: bool = False,
    ) -> Decision | None:
        """Record the outcome (with the events it emitted), as soon as the store takes it; a
        retry keeps the job's claim, for the lane retries it itself. The outcome of a call
        ``made`` is tried until recorded, stopping or not; None when, meanwhile, its claim ran
        out and another daemon took the job over and started its call (nothing is recorded:
        the job is the other's)."""
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
            # a call made is recorded however long the store is away, stopping too, or it
            # would be made again after the restart: a stopping dispatcher gives up on it
            # only past the call's bound and its grace (Dispatcher.stop)
            stopping=_never if made else self._stopped,
            owner=self.owner if made else None,
            changes=Changes.of(snapshot.engine),
        )
        self.work.progress()
        if processed is None:
            log(
                logger,
                logging.WARNING,
                f"job {job.id}: its outcome ({decision.outcome}) is not recorded: its claim ran"
                " out while this daemon was held up and another daemon took it over, or"
                " rulekit forget stopped it while its call was under way",
                job_id=job.id,
            )
            return None
        decision.processed = processed  # (a decision of its own: made for this attempt)
        return decision

    # shutdown --------------------------------------------------------------------------------


def _problem(exc: Exception) -> str:
    """Why a job cannot be run, in rulekit's own words: where and why its data does not
    validate, not the values it quotes."""
    if isinstance(exc, ValidationError):
        return f"the job's data no longer validates: {failure_reason(exc)}"
    return str(exc)


async def _sent_ids(
    hooks: HookRunner, action: Any, context: ActionContext, result: Any
) -> tuple[str, tuple[str, ...]] | None:
    """The channel and ids of the messages a reply through the channel created (marked seen
    when its outcome is recorded: their echoes are rulekit's own), or None."""
    provider = context.provider
    if provider is None or not action.replies_through_channel:
        return None
    try:
        ids = tuple(await ask(hooks, provider, "sent_message_ids", result))
    except HookUnanswered as exc:  # the reply was sent all the same, and is recorded
        log(logger, logging.WARNING, f"{provider.name}: sent_message_ids: {exc}")
        return None
    except Exception:  # a plugin's bug: the reply was sent all the same, and is recorded
        log(logger, logging.ERROR, f"{provider.name}: sent_message_ids raised", exc_info=True)
        return None
    return (provider.channel, ids) if ids else None
