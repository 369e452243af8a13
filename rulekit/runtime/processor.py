"""Processing: inbox items → provider → evaluation worker → audit record and action jobs.

Each round claims the oldest pending inbox items (committed at once, with a lease) and takes
them through the three steps of :mod:`rulekit.runtime.planning`: the channel's provider
normalizes the bodies with no transaction open, each within a budget
(:mod:`rulekit.runtime.parsing`; its calls on the state are recorded); the events are evaluated
in the **evaluation worker**, a separate process with a CPU and a wall budget per event
(:mod:`rulekit.runtime.worker`), while no transaction is open; then one transaction replays the
provider's calls (the state must answer as it did, or the item starts over), records each event
with its trace, enqueues the plans' jobs (the outbox), sets the cooldown marks and the timers
the provider asked for (asked before, within the budget too) and marks the item done. Either
all of an item's record is committed or none of it: a crash leaves the item pending, and it is
processed again from the start once its claim runs out.

**Together.** Consecutive items of different conversations go through each step together: they
are normalized one after the other (each reading what the ones before it wrote), one exchange
with the worker evaluates them, one transaction (one flush to disk) records them. An item whose
conversation repeats one of the group's starts the next group, so it reads what the earlier one
recorded. When one item of a group cannot be recorded (its state changed meanwhile, an error),
the group's transaction is rolled back and each of its items is processed again on its own.

The store's write lock is therefore held only while the project's code reads what the
evaluations need and while a plan is recorded, never while a plugin's code runs, rules are
evaluated or templates rendered: webhooks are acknowledged however slow the plugins and the
rules are.

**Order.** One processor per daemon handles items strictly in arrival order, so events of one
conversation are evaluated in the order their webhooks arrived. (The ingest also stores each
item's conversation key, so that daemons sharing a database keep that order between them: an
item is claimed only when no older item of its conversation is pending.)

**Poison.** When the provider fails on an item or runs over its budget on it
(:data:`~rulekit.runtime.parsing.PARSE_BUDGET`), when its evaluation runs over a budget or when
the worker dies on it twice, the item is set aside (``finish_inbox(error=...)``: status
``failed`` with the reason, visible in the console and with ``sqlite3``, retryable with
``requeue_inbox``), and the items behind it are processed normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import anyio.to_thread

from rulekit.channels.base import ChannelTimer
from rulekit.errors import ChannelError, ClaimLost, StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.evaluator import Evaluator, WorkerGone
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.handover import RecordedEvents
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.owner import owner_name
from rulekit.runtime.parsing import Parsers
from rulekit.runtime.planning import (
    Changes,
    Evaluated,
    Prepared,
    Processed,
    StateChanged,
    prepare_together,
    record,
    record_many,
)
from rulekit.runtime.reporting import report
from rulekit.runtime.worker import Evaluation, Refusal
from rulekit.snapshot import Snapshot
from rulekit.store.base import JournaledStore, State
from rulekit.store.records import InboxItem

logger = logging.getLogger("rulekit.processor")

BATCH = 64
"""Items a round claims at most. A busy daemon's rounds are full: a larger round shares one
claim, one normalizing transaction, one exchange with the worker and one recording commit
among more items (what the processor costs per item falls); an idle one's hold what arrived."""
INBOX_LEASE = 30.0
IDLE_POLL = 1.0
ROUND_BYTES = 16 * 1024 * 1024
"""Bytes of webhook bodies a round claims together (its first item whatever its size): a round
of 64 bodies of 4 MiB, decoded into events that each keep the body, would hold more than 1 GB."""
MAX_STARTS = 50
"""Times an item starts over because the state changed while it was evaluated."""
CHANGES_WAIT = 5.0
"""Seconds an item waits at most, claimed, for its conversation's changes to be recorded
with the events they caused (:attr:`~rulekit.runtime.planning.Prepared.changes_pending`):
normally milliseconds; past this (the store or the worker held up), it is evaluated without
them rather than hold the conversation up. Well within half the inbox lease, so the claim
stays this daemon's."""
CHANGES_POLL = 0.05
"""Seconds between two looks at changes being recorded by another daemon (this daemon's
dispatcher wakes the processor as it records them)."""


def _id(item: InboxItem) -> int:
    return item.id


def _behind(waiting: list[InboxItem], deferred: list[InboxItem]) -> list[InboxItem]:
    """The items of ``waiting`` that come after one of ``deferred`` of their conversation (all
    of them after one whose conversation is unknown): they keep their place behind it."""
    if not deferred:
        return []
    keys = {item.conversation_key for item in deferred}
    unknown = [item.id for item in deferred if item.conversation_key is None]
    first_unknown = min(unknown, default=None)
    return [
        item
        for item in waiting
        # (one whose conversation is unknown may be of theirs)
        if item.conversation_key in keys
        or item.conversation_key is None
        or (first_unknown is not None and item.id > first_unknown)
    ]


def _independent(items: list[InboxItem]) -> list[InboxItem]:
    """The first items, up to one whose conversation is unknown or repeats an earlier one's:
    those can be normalized and recorded together, none reading what another writes."""
    group: list[InboxItem] = []
    keys: set[str] = set()
    for item in items:
        key = item.conversation_key
        if group and (key is None or key in keys):
            break
        group.append(item)
        if key is None:
            break
        keys.add(key)
    return group


@dataclass
class _Evaluated:
    """An item normalized and evaluated, its record not yet committed."""

    item: InboxItem
    prepared: Prepared
    answer: list[Evaluation]
    schedule: Callable[[Event], list[ChannelTimer]] | None
    """The timers its provider asks for its events, asked already (:meth:`Processor._schedule`)."""


class Processor:
    """The inbox worker loop of one daemon."""

    def __init__(
        self,
        store: JournaledStore,
        snapshot: Callable[[], Snapshot],
        evaluator: Evaluator,
        *,
        metrics: Metrics,
        feed: LiveFeed,
        on_jobs: Callable[[], None] = lambda: None,
        on_timers: Callable[[], None] = lambda: None,
        batch: int = BATCH,
        clock: Callable[[], float] = time.monotonic,
        parse_budget: float | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.evaluator = evaluator
        self.metrics = metrics
        self.feed = feed
        self.on_jobs = on_jobs
        self.on_timers = on_timers
        self.batch = batch
        self.clock = clock
        self.owner = owner_name()
        self.last_progress = clock()
        """When the processor last finished an item or a round, or woke up (``/healthz``)."""
        self._idle = False
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.recorded = RecordedEvents()
        """What was recorded, for the dispatcher (:meth:`recorded_event`)."""
        self._held: list[InboxItem] = []
        """Items a round claimed but could not finish (the store failed): still claimed by this
        daemon, so the next round takes them first instead of waiting out their claim."""
        self._held_since = 0.0
        self._next: list[InboxItem] = []
        """Items the last round's record transaction claimed for the next round."""
        self._next_since = 0.0
        self._claimed_at: dict[int, float] = {}
        """When each held item was claimed (:attr:`_held_since` is the earliest)."""
        self._waiting: dict[int, float] = {}
        """Since when each item waiting for its conversation's changes has waited."""
        self._deferred: list[InboxItem] = []
        """Items of the group in progress that wait for their conversation's changes."""
        self.waits_for_changes = False
        """Whether the last round left items waiting for their conversation's changes."""
        self.parsers = Parsers(parse_budget)
        """Runs the providers' ``parse`` within its budget (by default
        :data:`~rulekit.runtime.parsing.PARSE_BUDGET`), off any transaction."""

    def wake(self) -> None:
        """Something was appended to the inbox."""
        self._wakeup.set()

    def changes_recorded(self) -> None:
        """A conversation's changes were recorded with the events they caused: items waiting
        for them are looked at again at once."""
        if self.waits_for_changes:
            self._wakeup.set()

    def arrival(self, event_id: str) -> datetime | None:
        """When the webhook of a recently processed event arrived (for latency metrics)."""
        return self.recorded.arrival(event_id)

    def recorded_event(self, event_id: str) -> Event | None:
        """A recently recorded event with jobs, as the store has it (``raw`` left out), handed
        over once (:meth:`RecordedEvents.take`)."""
        return self.recorded.take(event_id)

    def stop(self) -> None:
        """Stop after the item in progress; an evaluation in progress is abandoned (its item
        stays claimed and is processed again once the claim runs out)."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Process until :meth:`stop`."""
        try:
            await self._run()
        finally:
            self.parsers.close()

    async def _run(self) -> None:
        delay = 0.0
        with contextlib.suppress(WorkerGone):  # said again, with the reason, at the first item
            await anyio.to_thread.run_sync(self.evaluator.warm)
        while not self._stopping:
            # cleared before the round, not before the sleep: an item appended while the round
            # runs wakes the sleep below instead of waiting out the idle poll
            self._wakeup.clear()
            snapshot = self.snapshot()
            try:
                results, claimed, failure = await anyio.to_thread.run_sync(
                    self.process_round, snapshot
                )
                self._report(results)
            except Exception as exc:  # a bug: kept with its traceback; the processor goes on
                delay = min(max(delay * 2, 0.5), 30.0)
                log(
                    logger,
                    logging.ERROR,
                    f"cannot process the inbox: {type(exc).__name__}",
                    retry_in=delay,
                    exc_info=exc,
                )
                await self._sleep(delay)
                continue
            if failure is not None:
                delay = min(max(delay * 2, 0.5), 30.0)
                # a bug's message may quote a body: its type, then its traceback
                if isinstance(failure, StoreUnavailable | WorkerGone):
                    log(
                        logger,
                        logging.ERROR,
                        "cannot process the inbox",
                        failure=failure,
                        retry_in=delay,
                    )
                else:
                    log(
                        logger,
                        logging.ERROR,
                        f"cannot process the inbox: {type(failure).__name__}",
                        retry_in=delay,
                        exc_info=failure,
                    )
                await self._sleep(delay)
                continue
            delay = 0.0
            self.last_progress = self.clock()
            self.metrics.inbox_depth.set(claimed if claimed >= self.batch else 0)
            if self.waits_for_changes:  # woken by the dispatcher as it records them
                await self._sleep(CHANGES_POLL)
                continue
            if not claimed:
                self._idle = True  # nothing waits: no progress to make
                try:
                    await self._sleep(IDLE_POLL)
                finally:
                    self._idle = False
                    self.last_progress = self.clock()

    def stalled(self, limit: float) -> bool:
        """Whether the processor, with work to do (a round in progress, or a store failure
        being waited out), has made no progress for ``limit`` seconds (``/healthz``); an idle
        processor waiting for webhooks is not stalled."""
        return not self._idle and self.clock() - self.last_progress > limit

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until woken since the round began."""
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    def process_round(
        self, snapshot: Snapshot
    ) -> tuple[list[Processed | InboxItem], int, Exception | None]:
        """Claim up to ``batch`` items and process them in order (runs in a worker thread).
        Returns what each item led to (a set-aside item as itself), how many were claimed, and
        the error that ended the round early, if any (the store's, the workers', or a bug:
        the items left are held for the next round)."""
        results: list[Processed | InboxItem] = []
        # our own claims of a failed round, while well within their lease
        fresh = self.clock() - self._held_since < INBOX_LEASE / 2
        items: list[InboxItem] = self._held if fresh else []
        since = {item.id: self._claimed_at.get(item.id, self._held_since) for item in items}
        # and those the last round claimed as it recorded (no transaction of their own)
        claimed_before = bool(self._next) and self.clock() - self._next_since < INBOX_LEASE / 2
        if claimed_before:
            since.update((item.id, self._next_since) for item in self._next)
            items = items + self._next
        self._next = []
        waiting = list(items)
        self._held = []
        deferred: list[InboxItem] = []
        try:
            room = ROUND_BYTES - sum(len(item.body) for item in items)
            if len(items) < self.batch and not claimed_before and room > 0:
                with self.store.transaction() as state:
                    claimed = state.claim_inbox(
                        self.owner,
                        lease=INBOX_LEASE,
                        limit=self.batch - len(items),
                        budget=room,
                    )
                if claimed:
                    now = self.clock()
                    since.update((item.id, now) for item in claimed)
                    items = items + claimed
                    waiting.extend(claimed)
            self.evaluator.want(snapshot)
            while waiting and not self._stopping:
                # an item of a conversation that waits for its changes waits behind them too
                behind = _behind(waiting, deferred)
                if behind:
                    deferred.extend(behind)
                    waiting = [item for item in waiting if item not in behind]
                    continue
                group = _independent(waiting)
                # the round's last group claims the next round's items as it is recorded
                claim = self.batch if len(group) == len(waiting) and not deferred else 0
                self._deferred = []
                taken, done = self._process_together(snapshot, group, claim)
                results.extend(done)
                deferred.extend(self._deferred)
                del waiting[:taken]
                self.last_progress = self.clock()
        except Exception as exc:  # the store or the workers away, or a bug: held, tried again
            if self._stopping:
                return results, len(items), None
            since.update((item.id, self._next_since) for item in self._next)
            kept = {item.id: item for item in [*waiting, *deferred, *self._deferred, *self._next]}
            self._next = []
            self._hold(sorted(kept.values(), key=_id), since)
            return results, len(items), exc
        self._hold(sorted(deferred, key=_id), since)
        self.waits_for_changes = bool(deferred)
        return results, len(items), None

    def _hold(self, items: list[InboxItem], since: dict[int, float]) -> None:
        """Keep ``items`` (claimed by this daemon) for the next round, with their claims' times."""
        self._held = items
        self._claimed_at = {item.id: since[item.id] for item in items}
        if self._held:
            self._held_since = min(self._claimed_at.values())
        waiting = {item.id for item in items}
        self._waiting = {k: v for k, v in self._waiting.items() if k in waiting}

    def _waits(self, item: InboxItem, prepared: Prepared) -> bool:
        """Whether ``item`` waits for its conversation's changes to be recorded, with the
        events they cause (:data:`CHANGES_WAIT` at most)."""
        if not prepared.changes_pending:
            self._waiting.pop(item.id, None)
            return False
        now = self.clock()
        first = self._waiting.setdefault(item.id, now)
        if now - first < CHANGES_WAIT:
            return True
        log(
            logger,
            logging.WARNING,
            f"inbox item {item.id}: its conversation's changes were not recorded within"
            f" {CHANGES_WAIT:g} s; it is evaluated without them",
            inbox_id=item.id,
            channel=item.channel,
        )
        self._waiting.pop(item.id, None)
        return False

    def _process_together(
        self, snapshot: Snapshot, group: list[InboxItem], claim: int = 0
    ) -> tuple[int, list[Processed | InboxItem]]:
        """The first items of ``group`` (at least one) normalized in one transaction, evaluated
        in one exchange with a worker, and recorded in one transaction: how many were taken,
        and their results. When every item of the group is recorded, the record transaction
        also claims up to ``claim`` items for the next round."""
        prepared = prepare_together(
            self.store,
            [self._parse_of(snapshot, item) for item in group],
            team=snapshot.engine.reads_team,
            chains=snapshot.engine.reacts_to_own_events,
        )
        results: list[Processed | InboxItem] = []
        if prepared and isinstance(prepared[-1], Exception):
            results.extend(self._set_aside(group[len(prepared) - 1], prepared[-1]))
        ready = [
            (item, p) for item, p in zip(group, prepared, strict=False) if isinstance(p, Prepared)
        ]
        self._deferred = [item for item, p in ready if self._waits(item, p)]
        ready = [(item, p) for item, p in ready if item not in self._deferred]
        answers = self.evaluator.evaluate_many([p.request for _, p in ready])
        evaluated: list[_Evaluated] = []
        whole = len(ready) == len(group)
        for (item, p), answer in zip(ready, answers, strict=True):
            if isinstance(answer, Refusal):
                results.extend(self._set_aside(item, answer))
                continue
            try:
                schedule = self._schedule(snapshot, item, p)
            except StoreUnavailable:
                raise
            except Exception as exc:  # over its budget, or a plugin's bug: this item only
                results.extend(self._set_aside(item, exc))
                whole = False
                continue
            evaluated.append(_Evaluated(item, p, answer, schedule))
        results.extend(self._record_together(snapshot, evaluated, claim if whole else 0))
        return len(prepared), results

    def _parse_of(self, snapshot: Snapshot, item: InboxItem) -> Callable[[State], list[Event]]:
        """How ``item``'s body is normalized: its channel's provider's ``parse``, within its
        budget (:mod:`rulekit.runtime.parsing`)."""

        def parse(state: State) -> list[Event]:
            provider = snapshot.providers.get(item.channel)
            if provider is None:
                raise ChannelError(f"channel {item.channel!r} is not configured any more")
            return self.parsers.parse(provider, item.body, state)

        return parse

    def _schedule(
        self, snapshot: Snapshot, item: InboxItem, prepared: Prepared
    ) -> Callable[[Event], list[ChannelTimer]] | None:
        """The timers ``item``'s provider asks for its events once recorded, asked now,
        within the budget (plugin code: never while the record's transaction is open)."""
        provider = snapshot.providers.get(item.channel)
        if provider is None:
            return None
        return self.parsers.schedule(provider, prepared.events)

    def _record_together(
        self, snapshot: Snapshot, pending: list[_Evaluated], claim: int = 0
    ) -> list[Processed | InboxItem]:
        """Step 3 for several items in one transaction (one commit, one flush to disk), which
        then claims up to ``claim`` items for the next round (a claim needs no commit of its
        own while the processor is busy). When any of them fails (its state changed
        meanwhile, an error), none is recorded, nothing is claimed, and each is processed
        again on its own."""
        if not pending:
            return []
        handed: list[str] = []
        try:
            with self.store.transaction() as state:
                processed = record_many(
                    state,
                    [
                        Evaluated(
                            evaluated.prepared,
                            evaluated.answer,
                            evaluated.item.id,
                            evaluated.schedule,
                        )
                        for evaluated in pending
                    ],
                    Changes.of(snapshot.engine),
                )
                state.finish_inbox_items(
                    [evaluated.item.id for evaluated in pending], owner=self.owner
                )
                claimed = (
                    state.claim_inbox(
                        self.owner, lease=INBOX_LEASE, limit=claim, budget=ROUND_BYTES
                    )
                    if claim and not self._stopping
                    else []
                )
                handed = [
                    event_id
                    for evaluated, results in zip(pending, processed, strict=True)
                    for event_id in self._hand_over(results, len(evaluated.item.body))
                ]
        except StoreUnavailable:
            self._take_back(handed)
            raise
        except Exception as exc:
            self._take_back(handed)
            lost = set(exc.ids) if isinstance(exc, ClaimLost) else set()
            results: list[Processed | InboxItem] = []
            for evaluated in pending:
                if evaluated.item.id in lost:
                    self._lost(evaluated.item)
                else:
                    results.extend(self._process(snapshot, evaluated.item))
            return results
        if claimed:
            self._next, self._next_since = claimed, self.clock()
        out: list[Processed | InboxItem] = []
        for evaluated, results_of_item in zip(pending, processed, strict=True):
            self._arrived(evaluated.item, results_of_item)
            out.extend(results_of_item)
        return out

    def _arrived(self, item: InboxItem, processed: list[Processed]) -> None:
        self.recorded.arrived([result.event.id for result in processed], item.received_at)

    def _hand_over(self, processed: list[Processed], body_bytes: int) -> list[str]:
        """Keep the events of ``processed`` (one item's, of a body of ``body_bytes``) that have
        jobs for the dispatcher (:meth:`RecordedEvents.keep`, inside the transaction that
        records them), and return their ids."""
        events = [
            result.event
            for result in processed
            if result.jobs and not any((result.event.__pydantic_private__ or {}).values())
        ]
        return self.recorded.keep(events, body_bytes) if events else []

    def _take_back(self, ids: list[str]) -> None:
        """Forget events :meth:`_hand_over` kept for a transaction that did not commit."""
        self.recorded.take_back(ids)

    def _process(self, snapshot: Snapshot, item: InboxItem) -> list[Processed | InboxItem]:
        """All three steps for one item, its record in a transaction of its own."""
        for _ in range(MAX_STARTS):
            try:
                [prepared] = prepare_together(
                    self.store,
                    [self._parse_of(snapshot, item)],
                    team=snapshot.engine.reads_team,
                    chains=snapshot.engine.reacts_to_own_events,
                )
            except StoreUnavailable:
                raise
            except Exception as exc:
                return self._set_aside(item, exc)
            if isinstance(prepared, Exception):
                return self._set_aside(item, prepared)
            if self._waits(item, prepared):
                self._deferred.append(item)
                return []
            answer = self.evaluator.evaluate(prepared.request)
            if isinstance(answer, Refusal):
                return self._set_aside(item, answer)
            try:
                schedule = self._schedule(snapshot, item, prepared)
            except StoreUnavailable:
                raise
            except Exception as exc:
                return self._set_aside(item, exc)
            handed: list[str] = []
            try:
                with self.store.transaction() as state:
                    processed = record(
                        state,
                        prepared,
                        answer,
                        inbox_id=item.id,
                        schedule=schedule,
                        changes=Changes.of(snapshot.engine),
                    )
                    state.finish_inbox(item.id, owner=self.owner)
                    handed = self._hand_over(processed, len(item.body))
            except StateChanged as exc:
                self._take_back(handed)
                log(
                    logger,
                    logging.INFO,
                    f"inbox item {item.id} again",
                    failure=exc,
                    inbox_id=item.id,
                )
                continue
            except StoreUnavailable:
                self._take_back(handed)
                raise
            except ClaimLost:
                self._take_back(handed)
                self._lost(item)
                return []
            except Exception as exc:
                self._take_back(handed)
                return self._set_aside(item, exc)
            self._arrived(item, processed)
            return list(processed)
        return self._set_aside(
            item, Refusal(f"the conversation's state changed {MAX_STARTS} times while evaluated")
        )

    def _set_aside(
        self, item: InboxItem, cause: Exception | Refusal
    ) -> list[Processed | InboxItem]:
        bug: Exception | None = None
        failure: ChannelError | None = None
        said = None
        if isinstance(cause, Refusal):
            error, said = cause.reason, cause.said  # the log names its events by log_id
        elif isinstance(cause, ChannelError):
            error, failure = str(cause), cause
        else:
            error, bug = f"{type(cause).__name__}: {cause}", cause
        # a bug's message may quote the body: the line names its type, the traceback (passed
        # as the exception: this may run after its except block) shows the rest when content
        # may be logged. A provider's ChannelError (a plugin's wording, which may quote the
        # body too) is the line's failure: its message shown only when content may be logged;
        # a refusal's reason is rulekit's own fixed wording
        if failure is not None:
            message = f"inbox item {item.id} set aside"
        elif bug is None:
            message = f"inbox item {item.id} set aside: {said or error}"
        else:
            message = f"inbox item {item.id} set aside: {type(bug).__name__}"
        try:
            with self.store.transaction() as state:
                state.finish_inbox(item.id, error=error[:2000], owner=self.owner)
        except ClaimLost:
            self._lost(item)
            return []
        log(
            logger,
            logging.WARNING,
            message,
            inbox_id=item.id,
            channel=item.channel,
            exc_info=bug or False,
            failure=failure,
        )
        return [item]

    def _lost(self, item: InboxItem) -> None:
        """``item``'s claim was taken over: what was made of it here is dropped, the daemon
        that took it over records it."""
        log(
            logger,
            logging.WARNING,
            f"inbox item {item.id}: its claim ran out while this daemon was held up and was"
            " taken over: it is left to the daemon that took it",
            inbox_id=item.id,
            channel=item.channel,
        )

    def _report(self, results: list[Processed | InboxItem]) -> None:
        jobs = timers = False
        for result in results:
            if isinstance(result, InboxItem):
                self.metrics.events_failed.labels(result.channel).inc()
                self.feed.publish(
                    {"type": "inbox_failed", "inbox_id": result.id, "channel": result.channel}
                )
                continue
            report(result, self.metrics, self.feed)
            jobs = jobs or bool(result.jobs)
            timers = timers or bool(result.timers)
        if jobs:
            self.on_jobs()
        if timers:
            self.on_timers()
