"""From a delivery to plans: provider → events → engine, against one state.

``rulekit test`` and rule test suites use it with the in-memory store; the daemon uses the same
steps with a durable store, inside its own transactions.
"""

from __future__ import annotations

import copy
import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rulekit.actions.base import Action, ActionContext, call_key
from rulekit.channels.base import (
    ChannelContext,
    ChannelTimer,
    Provider,
    channel_timer_rule,
    parse_channel_timer_rule,
)
from rulekit.channels.body import EARLIEST_TIME, LATEST_TIME
from rulekit.channels.guarantees import settle
from rulekit.config import Config
from rulekit.engine.engine import Engine, Plan
from rulekit.engine.timers import TimerQueue
from rulekit.errors import ActionError, ChannelError, PluginError, RulekitError
from rulekit.event import MAX_OWN_EVENTS, Event
from rulekit.runtime.cpulimit import EventOverBudget, cpu_limited
from rulekit.runtime.replies import note_replies
from rulekit.store.base import State, Store
from rulekit.team import TeamFacts


def build_providers(engine: Engine) -> dict[str, Provider]:
    """A provider instance per configured channel, each :func:`settled
    <rulekit.channels.guarantees.settle>` (in the thread that builds the snapshot)."""
    providers: dict[str, Provider] = {}
    for name, channel in engine.config.channels.items():
        entry = engine.plugins.providers.entries[channel.provider]
        try:
            providers[name] = entry.value(
                ChannelContext(name, channel.settings, engine.config.directory)  # type: ignore[arg-type]
            )
        except Exception as exc:  # a plugin's bug: named, not a traceback of every command
            raise PluginError(
                f"channel {name!r}: provider {entry.name!r} (plugin {entry.plugin!r}) cannot "
                f"be made: {type(exc).__name__}: {exc}"
            ) from exc
        settle(providers[name])
    return providers


class ClockError(RulekitError):
    """A simulated time outside the times rulekit handles (:func:`simulated`)."""


def simulated(at: datetime, what: str) -> datetime:
    """``at``, when the simulated clock may stand there: between the times an event may tell
    (:data:`~rulekit.channels.body.EARLIEST_TIME` and :data:`~rulekit.channels.body.LATEST_TIME`,
    as webhooks' times are bounded in the daemon), so that a timer, a cooldown or a calendar
    counted from it stays inside what ``datetime`` holds; else :class:`ClockError`."""
    if not EARLIEST_TIME <= at <= LATEST_TIME:
        raise ClockError(
            f"{what} ({at.isoformat()}) is outside the times rulekit handles "
            f"({EARLIEST_TIME.year} to {LATEST_TIME.year})"
        )
    return at


class _SetAside(Exception):
    """The events of an input went past their CPU budget: the daemon sets the input aside."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Outcome:
    """The events one input produced and the plan of each; a due timer's plan comes with the
    triggering event as it was at fire time (``plan.firing`` says which timer)."""

    events: list[tuple[Event, Plan]] = field(default_factory=list)


@dataclass
class PendingTimer:
    """A timer of the simulation: rule, conversation, due time and the triggering event (a
    channel's timer, under its stored name ``@<channel>:<name>``, with the event that set
    it)."""

    rule: str
    conversation_id: str
    due: datetime
    trigger: Event


class Pipeline:
    """Normalizes inputs and plans each event, keeping conversation state between inputs, on a
    simulated clock: an event is processed at its ``occurred_at`` (at the clock when it gives
    none, or when the clock is already later: time never goes back), and timers due before it
    fire first, in order of their due times."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store
        self.providers = build_providers(engine)
        self.clock: datetime | None = None
        self.online: frozenset[str] | None = None
        """Who the simulation has online (lower-cased emails); None: everyone."""
        self.pending: TimerQueue[PendingTimer] = TimerQueue()
        self.open_counts: dict[int, dict[str, int]] = {}
        """The open conversations of each assignee in the state when an event was planned, by
        the id of the event object of its outcome; kept for events with an action that picks
        an assignee (``assign``: who is at ``max_open``)."""
        self._presence_recorded = False
        self._started: float | None = None
        """The process's CPU time when the input being planned began (its events' budget)."""
        self._anchor: datetime | None = None
        self._offset: timedelta | None = None

    @property
    def config(self) -> Config:
        return self.engine.config

    def provider(self, channel: str) -> Provider:
        provider = self.providers.get(channel)
        if provider is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ChannelError(f"channel {channel!r} is not configured (configured: {known})")
        return provider

    def raw(self, channel: str, body: bytes, *, now: datetime | None = None) -> Outcome:
        """Process one raw provider payload for ``channel``."""
        provider = self.provider(channel)
        return self._input(lambda state: provider.parse(body, state), now)

    def events(self, events: list[Event], *, now: datetime | None = None) -> Outcome:
        """Process already-normalized events."""
        return self._input(lambda state: events, now)

    def _input(self, parse: Callable[[State], list[Event]], now: datetime | None) -> Outcome:
        """One input (a webhook's body, an event file) in one transaction, as the daemon
        records one inbox item. When one of its events goes past its CPU budget, or its
        events together past ``processing.webhook_cpu``, the daemon sets the whole item aside:
        nothing of it is kept, so the simulation is left as it was before the input (state,
        timers, clock) and each of its events says why it does nothing."""
        kept = (copy.deepcopy(self.pending), self.clock, self._anchor, self._offset)
        presence = self._presence_recorded
        parsed: list[Event] = []
        self._started = time.process_time()
        try:
            with self.store.transaction() as state:
                parsed = parse(state)
                return self._plan(parsed, state, now)
        except _SetAside as aside:
            self.pending, self.clock, self._anchor, self._offset = kept
            self._presence_recorded = presence
            outcome = Outcome()
            for event in parsed:
                plan = Plan(event)
                plan.add_error(aside.reason)
                outcome.events.append((event, plan))
            return outcome
        finally:
            self._started = None

    def advance(self, to: datetime) -> Outcome:
        """Move the clock to ``to`` (never back), firing the timers due by then."""
        simulated(to, "the time the clock would move to")
        outcome = Outcome()
        with self.store.transaction() as state:
            self._fire_due(to, state, outcome)
        if self.clock is None or to > self.clock:
            self.clock = to
        return outcome

    def _plan(self, events: list[Event], state: State, now: datetime | None) -> Outcome:
        if now is not None:
            self.start(now)
        outcome = Outcome()
        for event in events:
            at = self._time_of(event)
            arrives = max(at, self.clock) if self.clock is not None else at
            self._fire_due(arrives, state, outcome)
            self.clock = arrives
            note_replies(state, event)
            evaluate = functools.partial(
                self.engine.evaluate,
                event, state, now=at, explain=True, excluded=True, team=self.team(state),
            )  # fmt: skip
            plan = self._planned(event, evaluate, state, of_input=True)
            self._carry_out(event, plan, state, arrives, outcome)
            self._schedule(event)
        return outcome

    def _schedule(self, event: Event) -> None:
        """The timers ``event``'s channel wants once it is recorded (Telegram's
        ``close_after``), kept as the daemon keeps them: a pending one of the same name and
        conversation moves to the new due time."""
        provider = self.providers.get(event.channel)
        for timer in provider.channel_timers(event) if provider is not None else []:
            rule = channel_timer_rule(event.channel, timer.name)
            self.pending.set((rule, timer.conversation_id), PendingTimer(
                rule, timer.conversation_id, timer.due, event
            ))  # fmt: skip

    def _fire_channel(self, timer: PendingTimer, state: State, outcome: Outcome) -> None:
        """A channel's timer fell due: its provider says what it means (Telegram: the
        conversation ``closed``), and those events are planned and carried out as the daemon
        evaluates and records them, at their own times."""
        found = parse_channel_timer_rule(timer.rule)
        assert found is not None
        channel, name = found
        provider = self.providers.get(channel)
        if provider is None:
            return
        due = ChannelTimer(name, timer.conversation_id, timer.due)
        for event in provider.timer_due(due, state):
            note_replies(state, event)
            evaluate = functools.partial(
                self.engine.evaluate,
                event, state, now=event.occurred_at, explain=True, excluded=True,
                team=self.team(state),
            )  # fmt: skip
            self._carry_out(event, self._planned(event, evaluate, state), state, due.due, outcome)
            self._schedule(event)

    def _planned(
        self, event: Event, evaluate: Callable[[], Plan], state: State, *, of_input: bool = False
    ) -> Plan:
        """The plan of ``event`` (``evaluate()``, within the budget), with its marks, its
        timers and its cancels kept in the simulation."""
        plan = self._within_budget(event, evaluate, of_input=of_input)
        plan.apply(state)
        self._note_counts(event, plan, state)
        for cancel in plan.cancels:
            self.pending.cancel((cancel.rule, cancel.conversation_id))
        for timer in plan.timers:
            key = (timer.rule, timer.conversation_id)
            if timer.restart or key not in self.pending:
                self.pending.set(key, PendingTimer(*key, timer.due, event))
        return plan

    def _carry_out(
        self, event: Event, plan: Plan, state: State, at: datetime, outcome: Outcome
    ) -> None:
        """Add ``event`` and its plan to ``outcome``, then do to the simulated state what the
        daemon's jobs would: each action that changes state (``assign``, ``tag``, ``set``,
        ``update_client``) makes its change through the same code its job runs
        (:meth:`~rulekit.actions.base.Action.simulate`), in the order the jobs run (the
        plan's, then those of the events they emitted), and the ``updated``/``assigned``
        events it emits are planned in turn, as the daemon evaluates them. So the next input
        sees the tags, the assignee, the client's data and the open counts production would
        have, and rules on emitted events show what they do."""
        outcome.events.append((event, plan))
        jobs = deque((event, place, planned) for place, planned in enumerate(plan.runnable))
        emitted = 0
        while jobs:
            cause, place, planned = jobs.popleft()
            action = self.engine.actions[planned.action]
            if not action.changes_conversation:
                if type(action).simulate is Action.simulate:
                    continue  # (changes nothing the simulation keeps)
                if self.describe(cause, planned)[1] is not None:
                    continue  # the daemon would dead-letter it before changing anything
            self._record_presence(state)
            try:
                emitted_now = action.simulate(
                    planned.model, cause, state, self.config, call=call_key(place)
                )
            except ActionError:
                continue  # a call the daemon would dead-letter: the output says why
            for new in emitted_now:
                emitted += 1
                new.occurred_at = at  # (the daemon's: when the call ran, on the clock)
                if emitted > MAX_OWN_EVENTS:  # as the daemon records its outcome
                    past = Plan(new)
                    past.add_error(
                        f"rulekit's own actions caused more than {MAX_OWN_EVENTS} events "
                        f"under event {event.id}: no rule reacts to more"
                    )
                    outcome.events.append((new, past))
                    continue
                evaluate = functools.partial(
                    self.engine.evaluate,
                    new, state, now=at, explain=True, excluded=True, team=self.team(state),
                )  # fmt: skip
                later = self._planned(new, evaluate, state)
                outcome.events.append((new, later))
                jobs.extend((new, n, each) for n, each in enumerate(later.runnable))

    def _record_presence(self, state: State) -> None:
        """Who the simulation has online (``--online``, a suite test's ``online:``), as the
        console records presence: what an ``assign`` reads when it picks an agent."""
        if self.online is None or self._presence_recorded:
            return
        self._presence_recorded = True
        for agent in self.config.directory.agents:
            email = agent.email.lower()
            status = "online" if email in self.online else "away"
            state.set_presence(email, status=status, connected_until=LATEST_TIME)

    def start(self, now: datetime) -> None:
        """Start the clock at ``now`` (``--now``, a suite test's ``now:``): the first event is
        processed then, and later events as much later as their ``occurred_at`` say."""
        if self.clock is None:
            self.clock = self._anchor = simulated(now, "the time the clock starts at")

    def _time_of(self, event: Event) -> datetime:
        """When ``event`` occurs in the simulation (its ``occurred_at``, moved by ``--now``; the
        clock when it gives none), which it then tells. An event older than the clock is one
        that arrives late: the daemon evaluates it at its own time all the same (``now``,
        business hours, cooldowns), while the clock, for timers, never goes back."""
        at = self.clock or event.occurred_at
        if "occurred_at" in event.model_fields_set:
            simulated(event.occurred_at, f"the time of event {event.id}")
            if self._anchor is not None and self._offset is None:
                self._offset = self._anchor - event.occurred_at
            at = event.occurred_at + (self._offset or timedelta())
        event.occurred_at = simulated(at, f"the time of event {event.id}")
        return at

    def _fire_due(self, until: datetime, state: State, outcome: Outcome) -> None:
        """Fire the timers due by ``until``, in order, each at its due time or, when the
        clock is already past it, at the clock: a late input's timer (due before the input
        arrived) fires as the daemon's does, once the input is processed, as late as that,
        so that its ``max_late`` drops it as the daemon's would."""
        while (timer := self.pending.pop_due(until)) is not None:
            # in UTC: a due time is of the config's or a calendar's zone, on whose wall clock
            # an advance: or --until added to the clock would count (23 hours a day in spring)
            due = timer.due.astimezone(UTC)
            self.clock = max(self.clock or due, due)
            if parse_channel_timer_rule(timer.rule) is not None:
                self._fire_channel(timer, state, outcome)
                continue
            trigger = timer.trigger
            found = state.find_conversation(trigger.channel, timer.conversation_id)
            client = (
                state.get_client(trigger.channel, trigger.client.id) if trigger.client.id else None
            )
            fired = trigger.at_fire_time(found[1] if found else None, client)
            fire = functools.partial(
                self.engine.fire,
                timer.rule, fired, timer.due, self.clock, explain=True, team=self.team(state),
            )  # fmt: skip
            self._carry_out(fired, self._planned(fired, fire, state), state, self.clock, outcome)

    def _within_budget(
        self, event: Event, evaluate: Callable[[], Plan], *, of_input: bool = False
    ) -> Plan:
        """``evaluate()`` within ``processing.event_cpu`` (and, for an event of an input, what
        is left of ``processing.webhook_cpu`` for the input's events together), as in the
        daemon's worker. Past it, an input is set aside whole (:meth:`_input`); an event an
        action emitted, or a timer's, gets a plan of nothing whose error says so."""
        processing = self.config.raw.processing
        event_cpu = processing.event_cpu.total_seconds()
        seconds = event_cpu
        if of_input and self._started is not None:
            used = time.process_time() - self._started
            seconds = min(event_cpu, processing.webhook_cpu.total_seconds() - used)
        try:
            if seconds <= 0:
                raise EventOverBudget
            with cpu_limited(seconds):
                return evaluate()
        except EventOverBudget:
            if seconds < event_cpu:
                budget = (
                    f"{processing.webhook_cpu.total_seconds():g} s for the events of its input "
                    "together; processing.webhook_cpu"
                )
            else:
                budget = f"{event_cpu:g} s; processing.event_cpu"
            reason = f"evaluating event {event.id} took more than its CPU budget ({budget})"
            if of_input:
                raise _SetAside(
                    f"{reason}: the daemon would set the input aside, with all its events"
                ) from None
            plan = Plan(event)
            plan.add_error(f"{reason}: the daemon would set it aside")
            return plan

    def _note_counts(self, event: Event, plan: Plan, state: State) -> None:
        if any("assignee" in self.engine.actions[planned.action].changes for planned in plan):
            self.open_counts[id(event)] = state.open_conversations_by_assignee()

    def team(self, state: State) -> TeamFacts | None:
        """The team the simulation's rules see: who it has online (everyone with access to the
        channel, unless told), and the open conversations of its state."""
        if not self.engine.reads_team:
            return None
        return TeamFacts.simulated(self.online, state.open_conversations_by_assignee())

    def context(self, event: Event) -> ActionContext:
        """The context actions describe themselves in, for a dry run."""
        return ActionContext(
            event=event,
            config=self.config,
            provider=self.providers.get(event.channel),
            online=self.online,
        )

    def describe(self, event: Event, planned: Any) -> tuple[str, str | None]:
        """What a planned action would do, and why it would fail (None when it would not), for
        ``event`` of an outcome of this pipeline."""
        action = self.engine.actions[planned.action]
        context = self.context(planned.seen or event)
        context.decided_later = planned.decided_later
        context.open_counts = self.open_counts.get(id(event))
        return action.describe(planned.model, context), action.would_fail(planned.model, context)
