"""Processing: inbox items → provider → engine → audit record and action jobs.

Each round claims the oldest pending inbox items and, in **one transaction**, lets the
channel's provider normalize each body (reading and updating conversation state), evaluates
every event against the current :class:`~rulekit.runtime.snapshot.Snapshot` with
``explain=True``, records the event with its trace and enqueues the plan's runnable actions as
jobs, applies the plan's cooldown marks, and marks the item done. Either all of that is
committed or none of it: a crash mid-round leaves the items pending, and the next daemon
processes them again from the start.

**Order.** One processor per daemon handles items strictly in arrival order, so events of one
conversation are evaluated in the order their webhooks arrived. (The ingest also stores each
item's conversation key, so that daemons sharing a database keep that order between them: an
item is claimed only when no older item of its conversation is pending.) Evaluation is CPU work of
microseconds against one store writer, so doing it in parallel would gain nothing; the slow part,
talking to outside services, is the dispatcher's, and runs in parallel per destination.

**Poison.** When a provider or the engine raises on an item, the round is rolled back and its
items are processed again one per transaction; the item that fails is set aside
(``finish_inbox(error=...)``: status ``failed``, visible in the console and with ``sqlite3``,
retryable with ``requeue_inbox``), and nothing behind it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio.to_thread

from rulekit.audit.trace import trace_of
from rulekit.errors import ChannelError, StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.snapshot import Snapshot
from rulekit.store.base import JournaledState, JournaledStore
from rulekit.store.records import InboxItem, JobSpec

logger = logging.getLogger("rulekit.processor")

BATCH = 16
INBOX_LEASE = 30.0
IDLE_POLL = 1.0
ARRIVALS_KEPT = 10_000


def owner_name() -> str:
    """Who claims work: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Processed:
    """What one event led to, for the feed and the metrics."""

    event: Event
    recorded: bool
    matched: list[str] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    inbox_id: int | None = None

    def message(self) -> dict[str, Any]:
        event = self.event
        return {
            "type": "event",
            "event_id": event.id,
            "channel": event.channel,
            "event": event.event,
            "origin": event.origin,
            "conversation_id": event.conversation.id,
            "inbox_id": self.inbox_id,
            "duplicate": not self.recorded,
            "matched": self.matched,
            "actions": [{"rule": j.rule, "action": j.action} for j in self.jobs],
            "errors": self.errors,
        }


def plan_events(
    state: JournaledState, snapshot: Snapshot, events: list[Event], inbox_id: int | None
) -> list[Processed]:
    """Evaluate ``events`` in order and record each with its trace and jobs (in ``state``'s
    transaction). An event recorded before (a redelivery) is skipped: its actions never run
    twice."""
    engine = snapshot.engine
    out = []
    for event in events:
        plan = engine.evaluate(event, state, explain=True)
        jobs = []
        for planned in plan.runnable:
            action = engine.actions[planned.action]
            jobs.append(
                JobSpec(
                    rule=planned.rule,
                    action=planned.action,
                    params=planned.model.model_dump(mode="json"),
                    destination=action.destination(planned.model),
                )
            )
        trace = trace_of(plan, rules_version=snapshot.version)
        recorded = state.record_event(event, inbox_id=inbox_id, trace=trace, jobs=jobs)
        if recorded:
            plan.apply(state)
        matched = [rule.name for rule in plan.rules if rule.matched]
        out.append(Processed(event, recorded, matched, jobs if recorded else [], plan.errors))
    return out


class Processor:
    """The inbox worker loop of one daemon."""

    def __init__(
        self,
        store: JournaledStore,
        snapshot: Callable[[], Snapshot],
        *,
        metrics: Metrics,
        feed: LiveFeed,
        on_jobs: Callable[[], None] = lambda: None,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.metrics = metrics
        self.feed = feed
        self.on_jobs = on_jobs
        self.batch = batch
        self.owner = owner_name()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._arrivals: OrderedDict[str, datetime] = OrderedDict()

    def wake(self) -> None:
        """Something was appended to the inbox."""
        self._wakeup.set()

    def arrival(self, event_id: str) -> datetime | None:
        """When the webhook of a recently processed event arrived (for latency metrics)."""
        return self._arrivals.get(event_id)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Process until :meth:`stop`; a round in progress is finished first."""
        delay = 0.0
        while not self._stopping:
            snapshot = self.snapshot()
            try:
                results, claimed = await anyio.to_thread.run_sync(self.process_round, snapshot)
                delay = 0.0
            except StoreUnavailable as exc:
                delay = min(max(delay * 2, 0.5), 30.0)
                log(logger, logging.ERROR, f"cannot process the inbox: {exc}", retry_in=delay)
                await self._sleep(delay)
                continue
            self._report(results)
            self.metrics.inbox_depth.set(claimed if claimed >= self.batch else 0)
            if not claimed:
                await self._sleep(IDLE_POLL)

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        if self._stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    def process_round(self, snapshot: Snapshot) -> tuple[list[Processed | InboxItem], int]:
        """Claim and process up to ``batch`` items (runs in a worker thread). Returns what each
        item led to (a failed item as itself) and how many were claimed."""
        items: list[InboxItem] = []
        try:
            with self.store.transaction() as state:
                items = state.claim_inbox(self.owner, lease=INBOX_LEASE, limit=self.batch)
                results: list[Processed | InboxItem] = []
                for item in items:
                    results.extend(self._process(state, snapshot, item))
                    state.finish_inbox(item.id)
            return results, len(items)
        except StoreUnavailable:
            raise
        except Exception:
            if not items:
                raise
        # one of the items is poison: go one by one, setting aside those that fail
        results = []
        for _ in items:
            results.extend(self._process_one(snapshot))
        return results, len(items)

    def _process_one(self, snapshot: Snapshot) -> list[Processed | InboxItem]:
        claimed: list[InboxItem] = []
        try:
            with self.store.transaction() as state:
                claimed = state.claim_inbox(self.owner, lease=INBOX_LEASE, limit=1)
                out: list[Processed | InboxItem] = []
                for item in claimed:
                    out.extend(self._process(state, snapshot, item))
                    state.finish_inbox(item.id)
                return out
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not claimed:
                raise
            item = claimed[0]
            error = f"{exc}" if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
            log(
                logger,
                logging.WARNING,
                f"inbox item {item.id} set aside: {error}",
                inbox_id=item.id,
                channel=item.channel,
                exc_info=not isinstance(exc, ChannelError),
            )
            with self.store.transaction() as state:
                state.finish_inbox(item.id, error=error[:2000])
            return [item]

    def _process(
        self, state: JournaledState, snapshot: Snapshot, item: InboxItem
    ) -> list[Processed]:
        provider = snapshot.providers.get(item.channel)
        if provider is None:
            raise ChannelError(f"channel {item.channel!r} is not configured any more")
        events = provider.parse(item.body, state)
        processed = plan_events(state, snapshot, events, item.id)
        for result in processed:
            result.inbox_id = item.id
            self._arrivals[result.event.id] = item.received_at
            if len(self._arrivals) > ARRIVALS_KEPT:
                self._arrivals.popitem(last=False)
        return processed

    def _report(self, results: list[Processed | InboxItem]) -> None:
        jobs = False
        for result in results:
            if isinstance(result, InboxItem):
                self.metrics.events_failed.labels(result.channel).inc()
                self.feed.publish(
                    {"type": "inbox_failed", "inbox_id": result.id, "channel": result.channel}
                )
                continue
            report(result, self.metrics, self.feed)
            jobs = jobs or bool(result.jobs)
        if jobs:
            self.on_jobs()


def report(result: Processed, metrics: Metrics, feed: LiveFeed) -> None:
    """Count and publish one processed event."""
    if result.recorded:
        metrics.events_processed.labels(result.event.channel, result.event.event).inc()
    feed.publish(result.message())
    log(
        logger,
        logging.INFO,
        f"event {result.event.id}: {result.event.event}",
        channel=result.event.channel,
        matched=len(result.matched),
        jobs=len(result.jobs),
        duplicate=not result.recorded,
    )
