"""The daemon's timers: firing the timers of timed rules (``after:``) when they are due.

Timers are rows of the store, set in the transaction that records the event whose plan asked
for them (:func:`rulekit.runtime.planning.record`), so they survive restarts and ``kill -9``.
The :class:`TimerRunner` sleeps until the earliest due time (one indexed read; no loop over the
timers, so an idle daemon with many pending timers costs nothing) or until a new timer is set,
then fires what is due:

1. **claim** due timers with a lease (several daemons on PostgreSQL: ``FOR UPDATE SKIP LOCKED``,
   so each timer goes to one daemon); a daemon that dies holding a claim loses it when the
   lease runs out;
2. read the triggering event (from the audit trail) and the conversation and client as they
   are now, and **evaluate** in the worker process like any event
   (:meth:`rulekit.engine.engine.Engine.fire`: ``max_late``, ``unless:``, the actions);
3. **record**, in one transaction: the timer's outcome — only if it is still pending and ours
   (a ``cancel_on`` event that committed first wins, and nothing runs) — and the fired plan as
   an event ``timer:<id>`` with its jobs in the outbox. The event id is unique, so even a
   claim that ran out while evaluating cannot enqueue the actions twice.
   A timer whose triggering event, conversation or client changed since step 2 read them
   (an erasure, an agent's reply) is evaluated again instead (:meth:`TimerRunner.fire_together`).

A timer whose conversation has webhooks received before it fell due and not processed yet
waits for them (:data:`INBOX_WAIT`), so that an agent's reply acknowledged in time cancels it
however far behind processing is.

The timers of one claim (up to :data:`BATCH`) go through these steps together: one read, one
exchange with the evaluation worker, one transaction recording them all (each still only if
pending and ours), so a burst of due timers costs a few transactions, not three per timer.

A timer due while the daemon was down fires when it starts, or is dropped (recorded with the
reason) when it is more than the rule's ``max_late`` overdue.

Channels keep timers here too (:meth:`rulekit.channels.base.Provider.channel_timers`, stored as
``@<channel>:<name>``): a due one is claimed the same way and handed to its provider's
:meth:`~rulekit.channels.base.Provider.timer_due`, whose events are evaluated and recorded as
a webhook's are (:mod:`rulekit.runtime.planning`), in the transaction that records the timer
as fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from rulekit.channels.base import ChannelTimer, parse_channel_timer_rule
from rulekit.errors import StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.evaluator import Evaluator, WorkerGone
from rulekit.runtime.logs import log
from rulekit.runtime.parsing import ParseOverBudget, Parsers
from rulekit.runtime.planning import (
    Changes,
    Processed,
    StateChanged,
    prepare_together,
    record,
    team_facts,
)
from rulekit.runtime.rollout import HAND_BACK, LEFT_TO_OTHERS
from rulekit.runtime.worker import Evaluation, Firing, Refusal, Request
from rulekit.store.base import JournaledState, JournaledStore
from rulekit.store.forms import hidden_values
from rulekit.store.records import Timer

if TYPE_CHECKING:
    from rulekit.snapshot import Snapshot

logger = logging.getLogger("rulekit.timers")

TIMER_LEASE = 60.0
"""Seconds a daemon holds a claimed timer while it evaluates it."""
MAX_SLEEP = 30.0
"""The longest the runner sleeps without looking at the store again (a timer another daemon
set, a claim that ran out)."""
BATCH = 20
STARTS = 5
"""How often a channel timer is tried again when the state changed under it."""
INBOX_WAIT = 300.0
"""Seconds past its due time a timer waits for its conversation's webhooks received before
it fell due and not processed yet (a backlog): an agent's reply in time cancels it, as in
``rulekit test``, however far behind processing is. Past that, it fires all the same."""
HOLD = 1.0
"""Seconds before a timer held for its conversation's webhooks is claimed again."""


GONE = "the triggering event is no longer recorded"


def _as_read(event: Event | str | None) -> object:
    """What a firing was evaluated on: the triggering event as it sees it when it fires (the
    conversation and client as they are), to compare with what is recorded when it is."""
    return event.model_dump(mode="json") if isinstance(event, Event) else event


def timer_event_id(timer_id: int) -> str:
    """The id of the event a fired timer is recorded as."""
    return f"timer:{timer_id}"


@dataclass
class Fired:
    """What firing one timer led to."""

    timer: Timer
    outcome: str
    reason: str = ""
    processed: Processed | None = None
    errors: list[str] = field(default_factory=list)
    also: list[Processed] = field(default_factory=list)
    """A channel timer's events after the first (``processed``)."""
    said: str | None = None
    """``reason`` as the log says it, when it differs (a refusal's: see
    :attr:`rulekit.runtime.worker.Refusal.said`)."""


class _Lost(Exception):
    """The channel timer was taken over while it was handled: nothing is recorded."""


class TimerRunner:
    """Fires due timers for one daemon."""

    def __init__(
        self,
        store: JournaledStore,
        snapshot: Callable[[], Snapshot],
        evaluator: Evaluator,
        *,
        owner: str,
        on_fired: Callable[[list[Fired]], None] = lambda fired: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.evaluator = evaluator
        self.owner = owner
        self.on_fired = on_fired
        self.now = now
        self.batch = batch
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.parsers = Parsers()
        """Runs the providers' ``timer_due`` and ``channel_timers`` within their budget, off
        any transaction (:mod:`rulekit.runtime.parsing`)."""

    def wake(self) -> None:
        """A timer was set (it may be due before the one the runner sleeps for)."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Fire timers as they fall due, until :meth:`stop`."""
        try:
            await self._run()
        finally:
            self.parsers.close()

    async def _run(self) -> None:
        delay = 0.0
        while not self._stopping:
            self._wakeup.clear()
            try:
                due, now = await anyio.to_thread.run_sync(self._next_due)
                if due is not None and due <= now:
                    fired = await anyio.to_thread.run_sync(self.fire_due)
                    self.on_fired(fired)
                    delay = 0.0
                    if fired:
                        continue
                    due = None  # claimed by another daemon: look again a little later
                    wait = 1.0
                else:
                    wait = MAX_SLEEP
                    if due is not None:
                        wait = min(wait, max((due - now).total_seconds(), 0.0))
                    delay = 0.0
            except (StoreUnavailable, WorkerGone) as exc:
                delay = min(max(delay * 2, 0.5), 30.0)
                log(logger, logging.ERROR, "cannot fire timers", failure=exc, retry_in=delay)
                wait = delay
            except Exception:  # a bug: kept with its traceback; the runner goes on after a pause
                delay = min(max(delay * 2, 0.5), 30.0)
                log(logger, logging.ERROR, "cannot fire timers", exc_info=True, retry_in=delay)
                wait = delay
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)

    def _next_due(self) -> tuple[datetime | None, datetime]:
        """The earliest due time, and the time to compare it with: the store's clock where it
        keeps the time of several daemons (their own clocks may disagree by minutes), else
        the daemon's."""
        with self.store.transaction() as state:
            return state.next_timer_due(), self._time(state)

    def _time(self, state: JournaledState) -> datetime:
        """Now, by the store's clock where it keeps the time of several daemons (how late a
        firing is, when what it enqueues falls due), else by the daemon's."""
        return (state.timers_clock() if self.store.shared else None) or self.now()

    def fire_due(self) -> list[Fired]:
        """Claim the timers due now and fire them (runs in a worker thread): the timed
        rules' timers of a claim together — one read, one exchange with the evaluation worker,
        one transaction that records them all — and each channel timer on its own."""
        with self.store.transaction() as state:
            # by the store's clock where it keeps one (several daemons agree on it)
            now = None if self.store.shared else self.now()
            timers = state.claim_timers(self.owner, lease=TIMER_LEASE, limit=self.batch, now=now)
        out: list[Fired] = []
        snapshot = self.snapshot()
        self.evaluator.want(snapshot)
        rules = [t for t in timers if parse_channel_timer_rule(t.rule) is None]
        if rules and not self._stopping:
            out.extend(self.fire_together(rules))
        for timer in timers:
            if self._stopping:
                break
            if parse_channel_timer_rule(timer.rule) is not None:
                fired = self.fire(timer)
                if fired is not None:
                    out.append(fired)
        return out

    def fire(self, timer: Timer) -> Fired | None:
        """Evaluate and record one claimed timer; None when it was cancelled meanwhile."""
        channel_timer = parse_channel_timer_rule(timer.rule)
        if channel_timer is not None:
            return self._fire_channel(timer, *channel_timer)
        fired = self.fire_together([timer])
        return fired[0] if fired else None

    def fire_together(self, timers: list[Timer]) -> list[Fired]:
        """Evaluate and record claimed timers of timed rules, in one transaction; those
        cancelled meanwhile are left out. A timer whose triggering event, conversation or
        client changed between the read and the record (``rulekit forget`` erased the client,
        an agent answered) is evaluated again on what is recorded now, up to :data:`STARTS`
        times; then its claim runs out and it comes back."""
        out: list[Fired] = []
        for _ in range(STARTS):
            if not timers or self._stopping:
                break
            fired, timers = self._fire_round(timers)
            out.extend(fired)
        return out

    def _fire_round(self, timers: list[Timer]) -> tuple[list[Fired], list[Timer]]:
        """One read, evaluation and record of ``timers``: what fired, and the timers whose
        records changed meanwhile (not recorded)."""
        with self.store.transaction() as state:
            triggers = [self._readable_trigger(state, timer) for timer in timers]
            team = team_facts(state) if self.evaluator.reads_team else None
            now = self._time(state)
            held = {
                timer.id
                for timer, event in zip(timers, triggers, strict=True)
                if isinstance(event, Event) and self._waits_for_inbox(state, timer, now)
            }
        if held:
            self._hold([timer for timer in timers if timer.id in held], now)
            triggers = [e for t, e in zip(timers, triggers, strict=True) if t.id not in held]
            timers = [timer for timer in timers if timer.id not in held]
        out: list[Fired] = []
        requests, waiting, others = [], [], []
        for timer, event in zip(timers, triggers, strict=True):
            if not isinstance(event, Event):
                outcome, reason = ("gone", GONE) if event is None else ("error", event)
                fired = self._finish(timer, outcome, reason, now)
                if fired is not None:
                    out.append(fired)
                continue
            if self._for_others(timer, event, now):
                others.append(timer)
                continue
            seen = _as_read(event)
            event.id = timer_event_id(timer.id)
            firing = Firing(timer.rule, timer.due, now)
            requests.append(Request([event], {}, firing=firing, team=team))
            waiting.append((timer, event, seen))
        if others:
            self._hand_back(others, now)
        answers = self.evaluator.evaluate_many(requests)
        done: list[Fired] = []
        changed: list[Timer] = []
        with self.store.transaction() as state:
            for (timer, event, seen), answer in zip(waiting, answers, strict=True):
                if _as_read(self._readable_trigger(state, timer)) != seen:
                    changed.append(timer)  # evaluated on records that are no longer so
                    continue
                fired = self._record(state, timer, event, answer, now)
                if fired is not None:
                    done.append(fired)
        events = {timer.id: event for timer, event, _ in waiting}
        for fired in done:
            error = fired.outcome == "error"
            event = events.get(fired.timer.id)
            log(
                logger,
                logging.INFO if not error else logging.WARNING,
                f"timer {fired.timer.id} of {fired.timer.rule!r}: {fired.outcome}"
                + (f": {fired.said or fired.reason}" if error else ""),
                late=round((now - fired.timer.due).total_seconds(), 3),
                jobs=len(fired.processed.jobs) if fired.processed is not None else 0,
                # why its unless: failed may quote what it read of the client
                personal=hidden_values(event.public()) if error and event is not None else None,
            )
        return out + done, changed

    def _for_others(self, timer: Timer, event: Event, now: datetime) -> bool:
        """Whether to leave ``timer`` to the other daemons sharing the store: this daemon's
        rule set has no timed rule of its name that takes its triggering event, and another
        daemon's may (it reloaded a newer set first; :mod:`rulekit.runtime.rollout`). A daemon
        of the older set used to end it as ``gone``: the rule never ran."""
        if not self.store.shared or (now - timer.due).total_seconds() > LEFT_TO_OTHERS:
            return False
        rule = self.snapshot().engine.by_name.get(timer.rule)
        if rule is None or rule.timing is None:
            return True
        return (rule.channels is not None and event.channel not in rule.channels) or (
            rule.events is not None and event.event not in rule.events
        )

    def _waits_for_inbox(self, state: JournaledState, timer: Timer, now: datetime) -> bool:
        """Whether ``timer`` waits for webhooks of its conversation received by its due time
        and not processed yet (at most :data:`INBOX_WAIT` past it, and half its rule's
        ``max_late``, so that the wait never has it dropped): a ``cancel_on`` reply among
        them, acknowledged in time, cancels it once processed."""
        limit = INBOX_WAIT
        rule = self.snapshot().engine.by_name.get(timer.rule)
        if rule is not None and rule.timing is not None:
            limit = min(limit, rule.timing.max_late.total_seconds() / 2)
        if (now - timer.due).total_seconds() > limit:
            return False
        found = state.find_conversation(timer.channel, timer.conversation_id)
        return found is not None and state.inbox_waiting(
            timer.channel, found[0], received_by=timer.due
        )

    def _hold(self, timers: list[Timer], now: datetime) -> None:
        """Give up the claims of ``timers`` for :data:`HOLD` seconds: their conversations'
        webhooks go first."""
        self._give_up(
            timers,
            now,
            HOLD,
            logging.DEBUG,
            "waits for its conversation's webhooks received before it fell due",
        )

    def _hand_back(self, timers: list[Timer], now: datetime) -> None:
        """Give up the claims of ``timers``, left to the other daemons."""
        self._give_up(
            timers,
            now,
            HAND_BACK,
            logging.INFO,
            "left to the daemons whose rules have it (this daemon's rules do not, or not for "
            "its triggering event)",
        )

    def _give_up(
        self, timers: list[Timer], now: datetime, seconds: float, level: int, why: str
    ) -> None:
        """Hand ``timers`` back for ``seconds`` (:meth:`~rulekit.store.timers.Timers.
        hand_back_timer`), in one transaction, and log ``why`` for each."""
        until = now + timedelta(seconds=seconds)
        with self.store.transaction() as state:
            for timer in timers:
                state.hand_back_timer(timer.id, self.owner, until=until)
        for timer in timers:
            log(
                logger,
                level,
                f"timer {timer.id} of {timer.rule!r}: {why}",
                late=round((now - timer.due).total_seconds(), 3),
            )

    @classmethod
    def _readable_trigger(cls, state: JournaledState, timer: Timer) -> Event | str | None:
        """:meth:`_trigger_of`, or why it cannot be read: a record that no longer loads costs
        its timer (an ``error``), not the runner, which would stop firing every timer (and
        meet the same record again after a restart)."""
        try:
            return cls._trigger_of(state, timer)
        except StoreUnavailable:
            raise
        except Exception as exc:  # the reason names no value: the record may be the client's
            return f"the triggering event or its conversation cannot be read ({type(exc).__name__})"

    @staticmethod
    def _trigger_of(state: JournaledState, timer: Timer) -> Event | None:
        """The timer's triggering event as it sees it when it fires (None: not recorded)."""
        record = state.get_event(timer.trigger_event_id)
        if record is None:
            return None
        trigger = Event.model_validate(record.data)
        found = state.find_conversation(trigger.channel, timer.conversation_id)
        client = state.get_client(trigger.channel, trigger.client.id) if trigger.client.id else None
        return trigger.at_fire_time(found[1] if found is not None else None, client)

    def _record(
        self,
        state: JournaledState,
        timer: Timer,
        event: Event,
        answer: list[Evaluation] | Refusal,
        now: datetime,
    ) -> Fired | None:
        """Record one evaluated timer, only if it is still pending and ours."""
        if isinstance(answer, Refusal):
            if not state.finish_timer(timer.id, self.owner, "error", reason=answer.reason, at=now):
                return None
            return Fired(timer, "error", answer.reason, said=answer.said)
        (evaluation,) = answer
        outcome = evaluation.firing or {"outcome": "error", "reason": "no firing recorded"}
        reason = str(outcome.get("reason") or "")
        if not state.finish_timer(
            timer.id, self.owner, str(outcome["outcome"]), reason=reason, at=now, event_id=event.id
        ):
            return None  # cancelled (or taken over) meanwhile: nothing runs
        recorded = state.record_event(
            event, inbox_id=None, trace=evaluation.trace, jobs=evaluation.jobs, now=now
        )
        if recorded and evaluation.jobs:  # the plan's tag and set, made as it is recorded
            Changes.of(self.snapshot().engine).make(state, event, evaluation.jobs)
        fired = Fired(timer, str(outcome["outcome"]), reason)
        fired.processed = Processed(
            event,
            recorded,
            evaluation.matched,
            evaluation.jobs if recorded else [],
            evaluation.errors,
            team=evaluation.team,
        )
        return fired

    def _fire_channel(self, timer: Timer, channel: str, name: str) -> Fired | None:
        """A channel's timer: the provider says what it means, its events are evaluated and
        recorded like a webhook's, with the timer's outcome."""
        if self.store.shared:
            with self.store.transaction() as state:
                now = self._time(state)
        else:
            now = self.now()
        provider = self.snapshot().providers.get(channel)
        if provider is None:
            return self._finish(timer, "gone", f"channel {channel!r} is not configured", now)
        with self.store.transaction() as state:
            waits = self._waits_for_inbox(state, timer, now)
        if waits:
            self._hold([timer], now)
            return None
        due = ChannelTimer(name, timer.conversation_id, timer.due)
        for _ in range(STARTS):
            try:
                # (the provider's code runs with no transaction open, within its budget)
                [prepared] = prepare_together(
                    self.store,
                    [lambda state: self.parsers.timer_due(provider, due, state)],
                    team=self.evaluator.reads_team,
                )
                if isinstance(prepared, Exception):
                    raise prepared
                answer = self.evaluator.evaluate(prepared.request) if prepared.events else []
                if isinstance(answer, Refusal):
                    return self._finish(timer, "error", answer.reason, now, said=answer.said)
                schedule = self.parsers.schedule(provider, prepared.events)
            except StoreUnavailable:
                raise
            except ParseOverBudget as exc:  # (its reason is rulekit's own wording)
                log(logger, logging.ERROR, f"channel timer of {channel!r}", failure=exc)
                return self._finish(timer, "error", str(exc), now)
            except Exception as exc:  # a provider's bug costs this timer, not the runner
                # (the reason names the exception, not its message, which may quote the
                # client's data; the traceback goes to the log, its messages hidden as any)
                log(logger, logging.ERROR, f"channel timer of {channel!r}", exc_info=exc)
                return self._finish(timer, "error", f"{channel}: {type(exc).__name__}", now)
            first = prepared.events[0].id if prepared.events else None
            try:
                with self.store.transaction() as state:
                    reason = "" if prepared.events else "nothing happened"
                    if not state.finish_timer(
                        timer.id, self.owner, "fired", reason=reason, at=now, event_id=first
                    ):
                        raise _Lost
                    processed = record(
                        state,
                        prepared,
                        answer,
                        inbox_id=None,
                        schedule=schedule,
                        changes=Changes.of(self.snapshot().engine),
                    )
            except StateChanged:
                continue
            except _Lost:
                return None
            fired = Fired(timer, "fired", reason)
            fired.processed = processed[0] if processed else None
            fired.also = processed[1:]
            log(
                logger,
                logging.INFO,
                f"timer {timer.id} of channel {channel!r} ({name}): "
                + (", ".join(e.event for e in prepared.events) or "nothing happened"),
                late=round((now - timer.due).total_seconds(), 3),
            )
            return fired
        return None  # the state kept changing: the claim runs out and the timer comes back

    def _finish(
        self, timer: Timer, outcome: str, reason: str, now: datetime, said: str | None = None
    ) -> Fired | None:
        with self.store.transaction() as state:
            if not state.finish_timer(timer.id, self.owner, outcome, reason=reason, at=now):
                return None
        log(
            logger,
            logging.WARNING,
            f"timer {timer.id} of {timer.rule!r}: {outcome}: {said or reason}",
        )
        return Fired(timer, outcome, reason)
