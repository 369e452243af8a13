"""Planning a matched rule: its actions, in order, each against the conversation as the
actions before it leave it, or, for a timed rule, its timer."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from rulekit.actions.base import PlannedChange
from rulekit.config import Config
from rulekit.engine.plan import NOT_KEPT, Plan, PlannedAction, RuleTrace
from rulekit.engine.reasons import condition_source, failure_reason
from rulekit.engine.timers import TimerSet, due_time
from rulekit.errors import TemplateError
from rulekit.event import Event
from rulekit.rules.spec import Rule, Timing, format_duration


class ActionSequence:
    """The event as the plan so far leaves it: each state-changing action's planned change is
    applied to its conversation, for the conditions and templates after it."""

    def __init__(self, event: Event) -> None:
        self.original = event
        """The plan's event, as it came."""
        self.event = event
        self.changed = False
        self.decided_later: frozenset[str] = frozenset()

    def apply(self, change: PlannedChange) -> None:
        """Apply a state-changing action's planned change to the event's conversation."""
        self.decided_later = self.decided_later | change.decided_later
        before = self.event.conversation
        # (as JSON: a field set to true over 1 is a change, which == would not see)
        if change.conversation == before and (
            change.conversation.model_dump_json() == before.model_dump_json()
        ):
            return
        self.event = self.event.model_copy(update={"conversation": change.conversation})
        self.changed = True


def plan_actions(
    rule: Rule,
    sequence: ActionSequence,
    now: datetime,
    env: dict[str, str],
    plan: Plan,
    trace: RuleTrace | None,
    config: Config,
) -> None:
    """Plan each action of matched ``rule`` into ``plan``, in order, against the event as
    ``sequence`` leaves it; an action whose parameters fail is an error, not a stop."""
    for step in rule.steps:
        event = sequence.event
        model = step.validated  # parameters without templates: validated once
        if model is None:
            try:
                model = step.planned(event, now, env)
            except (TemplateError, ValidationError, Exception) as exc:
                reason = failure_reason(exc)
                if not plan.add_error(f"rule {rule.name!r}: {step.action}: {reason}"):
                    reason = NOT_KEPT
                if trace is not None:
                    trace.reason += f"; {step.action} not planned: {reason}"
                continue
        skipped = None
        if (
            event.recovered
            and step.action_class.faces_client(model)
            and not getattr(model, "on_recovered", False)
        ):
            skipped = "the message was first seen late (recovered); client-facing actions skip it"
        plan.actions.append(
            PlannedAction(
                rule.name,
                step.action,
                model,
                skipped,
                seen=event if event is not plan.event else None,
                decided_later=sequence.decided_later,
                dumped=step.dumped(),
                entry=step.entry(rule.name),
            )
        )
        if step.action_class.changes_conversation and not skipped:
            change = step.action_class.planned_change(model, event, config)
            sequence.apply(change)


def set_timer(
    rule: Rule,
    timing: Timing,
    conversation_id: str | None,
    now: datetime,
    plan: Plan,
    trace: RuleTrace | None,
    config: Config,
) -> None:
    """Plan the timer of timed ``rule`` matched at ``now`` (none without a conversation, or
    when its calendar never opens: an error then), saying so in ``trace``."""
    if not conversation_id:  # a timer belongs to a conversation
        if trace is not None:
            trace.reason += "; no timer: the event has no conversation"
        return
    due = due_time(timing, now, config.calendars)
    if due is None:
        calendar = config.calendars.get(timing.calendar or "")
        if calendar is None:
            problem = f"calendar {timing.calendar!r} is not configured"
        elif calendar.next_open(now) is None:
            problem = f"calendar {timing.calendar!r} does not open within two years"
        else:  # open, but not that long
            problem = (
                f"calendar {timing.calendar!r} is not open {format_duration(timing.after)}"
                " in all within two years"
            )
        plan.add_error(f"rule {rule.name!r}: no timer: {problem}")
        if trace is not None:
            trace.reason += f"; no timer: {problem}"
        return
    plan.timers.append(TimerSet(rule.name, conversation_id, due, timing.restart))
    if trace is not None:
        local = due.astimezone(config.timezone)
        # the day too when it is not today's (business time from Friday evening is Monday's)
        day = (
            ""
            if local.date() == now.astimezone(config.timezone).date()
            else f"{local:%a %Y-%m-%d} "
        )
        trace.reason += f"; timer set: would fire at {day}{local:%H:%M} ({timing.describe()})"
        if timing.unless is not None:
            trace.reason += f" unless {condition_source(timing.unless)}"
