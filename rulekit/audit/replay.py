"""``rulekit replay``: backtesting. Candidate rules run over recorded events, and what they would
do is compared with what the daemon enqueued then.

Pure: events are rebuilt from their audit records (``Event.public()``: no raw payload), the
engine evaluates them without a state, nothing is written and nothing is sent. Consequences:

* cooldowns are not replayed (every event is evaluated as if no cooldown were running), so a
  rule with a cooldown may show actions added that its cooldown would have held back;
* what a provider derives from its state (e.g. which messages are new) is as recorded then.

Timed rules (``after:``) are simulated as ``rulekit test`` simulates them, on the recorded
times: a replayed event's timers are set and cancelled (``cancel_on``, ``restart``) as the
candidate rules say, and each fires at its due time, between the recorded events it falls
between (at the end, those due by the time of the replay), against the conversation and
client as the latest replayed event of that conversation recorded them. A simulated firing is
compared with the firing the daemon recorded for the same rule, conversation and triggering
event (an event ``timer:<id>``); recorded firings are not replayed as events themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from rulekit.audit.privacy import hidden_values, hide
from rulekit.engine.engine import Engine, Plan
from rulekit.engine.reasons import failure_reason
from rulekit.engine.timers import TimerQueue
from rulekit.event import Client, Conversation, Event
from rulekit.safetext import text_lines
from rulekit.store.base import JournaledState
from rulekit.store.forms import PersonalValues
from rulekit.store.records import EventRecord
from rulekit.team import TeamFacts

COOLDOWN_NOTE = "cooldowns are not replayed: each event is evaluated as if none were running"
TIMER_NOTE = "timed rules fire at their due times on the recorded clock"


@dataclass(frozen=True)
class Action:
    """An action of a plan, as compared: which rule, which action, with what parameters."""

    rule: str
    action: str
    params: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.action


@dataclass
class Change:
    """What would change for one event."""

    record: EventRecord
    added: list[Action] = field(default_factory=list)
    removed: list[Action] = field(default_factory=list)
    changed: list[tuple[Action, Action]] = field(default_factory=list)
    """``(then, now)`` pairs of the same rule and action whose parameters differ."""
    unchanged: list[Action] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.errors)


@dataclass
class Report:
    """The replay of a set of events."""

    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(event id, why)`` for records that could not be rebuilt into events."""
    pending_timers: int = 0
    """Simulated timers not due yet when the replay ends."""
    keeps_unchanged: bool = True
    """Whether an event that would not change is kept whole (``--all`` lists it); else only
    what the summary counts of it is: a replay of 100,000 events holds the ones it lists."""

    def add(self, change: Change) -> None:
        """One more event's change (as much of it as will be shown)."""
        if not (change.differs or self.keeps_unchanged):
            change.record = replace(change.record, data={}, trace={})
            change.unchanged = [Action(a.rule, a.action, {}) for a in change.unchanged]
        self.changes.append(change)

    def summary(self) -> dict[str, Any]:
        fired_then: Counter[str] = Counter()
        fired_now: Counter[str] = Counter()
        for change in self.changes:
            then = {a.rule for a in change.removed + change.unchanged}
            then |= {old.rule for old, _ in change.changed}
            now = {a.rule for a in change.added + change.unchanged}
            now |= {new.rule for _, new in change.changed}
            fired_then.update(then)
            fired_now.update(now)
        rules = sorted(set(fired_then) | set(fired_now))
        return {
            "events": len(self.changes),
            "changed_events": sum(change.differs for change in self.changes),
            "skipped_events": len(self.skipped),
            "actions_added": sum(len(change.added) for change in self.changes),
            "actions_removed": sum(len(change.removed) for change in self.changes),
            "actions_changed": sum(len(change.changed) for change in self.changes),
            "errors": sum(len(change.errors) for change in self.changes),
            "rules": {
                rule: {"events_then": fired_then[rule], "events_now": fired_now[rule]}
                for rule in rules
                if fired_then[rule] != fired_now[rule]
            },
            "pending_timers": self.pending_timers,
            "note": COOLDOWN_NOTE,
            "timers": TIMER_NOTE,
        }


def replay(
    state: JournaledState,
    engine: Engine,
    *,
    since: datetime | None = None,
    limit: int = 10_000,
    now: datetime | None = None,
    keep_unchanged: bool = True,
) -> Report:
    """Evaluate ``engine``'s rules over the events recorded since ``since`` (at most ``limit``,
    the most recent), oldest first, and compare each plan with the jobs recorded then. Timers
    of timed rules are simulated on the recorded times; those due by ``now`` (the time of the
    replay; default: the current time) fire. Without ``keep_unchanged``, the events that
    would not change are only counted (:attr:`Report.keeps_unchanged`)."""
    report = Report(keeps_unchanged=keep_unchanged)
    timers = _TimerReplay(state, engine, report)
    for record in _oldest_first(state, since, limit):
        if isinstance(record.trace.get("timer"), dict):
            timers.recorded(record)  # a firing: compared with the simulated one
            continue
        try:
            event = Event.model_validate(record.data)
        except ValidationError as exc:
            reason = f"cannot rebuild the event: {failure_reason(exc)}"
            report.skipped.append((record.event_id, reason))
            continue
        timers.fire_due(event.occurred_at)
        # rules reading team see what the recorded decision read of it (else: everyone online)
        plan = engine.evaluate(event, None, team=TeamFacts.recorded(record.trace.get("team")))
        change = compare(record, _jobs(state, record.event_id), _planned(plan))
        change.errors = list(plan.errors)
        report.add(change)
        timers.follow(event, plan)
    timers.fire_due(now or datetime.now(UTC))
    timers.finish()
    return report


PAGE = 500
"""Records read at a time."""
KEPT_TRACE = ("team", "timer")
"""What a replay reads of a record's trace (what the rules read of ``team``; a timer's
firing): the rest (every candidate rule, each condition's result) is most of a record."""


def _oldest_first(
    state: JournaledState, since: datetime | None, limit: int
) -> Iterator[EventRecord]:
    """The most recent ``limit`` records since ``since``, oldest first, each with only the
    part of its trace a replay reads; never more than a page of them held at once: their ids
    are listed a page at a time, newest first, then each record read as its turn comes (a
    replay of 100,000 events held every record, over a gigabyte)."""
    ids: list[str] = []
    before: str | None = None
    while len(ids) < limit:
        wanted = min(limit - len(ids), PAGE)
        page = state.history(since=since, limit=wanted, before=before)
        ids += [record.event_id for record in page]
        if len(page) < wanted:
            break
        before = page[-1].event_id
    for event_id in reversed(ids):
        record = state.get_event(event_id)
        if record is not None:  # (in the same snapshot: always)
            trace = {key: record.trace[key] for key in KEPT_TRACE if key in record.trace}
            yield replace(record, trace=trace)


def _jobs(state: JournaledState, event_id: str) -> list[Action]:
    return [
        Action(job.rule, job.action, job.params)
        for job in state.jobs(event_id=event_id, limit=10_000)
    ]


def _planned(plan: Plan) -> list[Action]:
    return [Action(a.rule, a.action, a.model.model_dump(mode="json")) for a in plan.runnable]


@dataclass
class _Pending:
    rule: str
    conversation_id: str
    due: datetime
    trigger: Event


class _TimerReplay:
    """The timers of a replay: set, cancelled and fired on the recorded clock, as the dry run
    does (:class:`rulekit.runtime.pipeline.Pipeline`), each firing paired with the recorded
    one of the same rule, conversation and triggering event."""

    def __init__(self, state: JournaledState, engine: Engine, report: Report) -> None:
        self.state = state
        self.engine = engine
        self.report = report
        self.pending: TimerQueue[_Pending] = TimerQueue()
        self.latest: dict[tuple[str, str], tuple[Conversation, Client]] = {}
        self.replayed: set[str] = set()
        self.firings: dict[tuple[str, str, str], EventRecord] = {}

    def recorded(self, record: EventRecord) -> None:
        """Keep a recorded firing (``timer:<id>``) to compare with its simulated one."""
        try:
            found = [t for t in self.state.timers(event_id=record.event_id) if t.by_event]
        except NotImplementedError:
            found = []
        for timer in found:
            if timer.by_event == record.event_id:
                self.firings[(timer.rule, timer.conversation_id, timer.trigger_event_id)] = record
                return
        self.report.skipped.append((record.event_id, "a timer's firing whose timer is gone"))

    def follow(self, event: Event, plan: Plan) -> None:
        """After a replayed event: what it set and cancelled, and its conversation as it is."""
        self.replayed.add(event.id)
        if event.conversation.id:
            self.latest[(event.channel, event.conversation.id)] = (
                event.conversation,
                event.client,
            )
        for cancel in plan.cancels:
            self.pending.cancel((cancel.rule, cancel.conversation_id))
        for timer in plan.timers:
            key = (timer.rule, timer.conversation_id)
            if timer.restart or key not in self.pending:
                self.pending.set(key, _Pending(timer.rule, timer.conversation_id, timer.due, event))

    def fire_due(self, until: datetime) -> None:
        """Fire the pending timers due by ``until``, earliest first."""
        while (timer := self.pending.pop_due(until)) is not None:
            trigger = timer.trigger
            conversation, client = self.latest.get(
                (trigger.channel, timer.conversation_id), (None, None)
            )
            fired = trigger.at_fire_time(conversation, client)
            plan = self.engine.fire(timer.rule, fired, timer.due, timer.due)
            record = self.firings.pop((timer.rule, timer.conversation_id, trigger.id), None)
            then = _jobs(self.state, record.event_id) if record is not None else []
            if record is None:
                record = EventRecord(
                    event_id=f"(timer of {timer.rule!r} set by {trigger.id})",
                    inbox_id=None,
                    channel=trigger.channel,
                    event=trigger.event,
                    conversation_id=timer.conversation_id,
                    occurred_at=timer.due,
                    processed_at=timer.due,
                    data=fired.public(),
                    trace={},
                )
            change = compare(record, then, _planned(plan))
            change.errors = list(plan.errors)
            if plan.firing is not None and plan.firing.outcome == "error":
                change.errors.append(f"timer of {timer.rule!r}: {plan.firing.reason}")
            self.report.add(change)

    def finish(self) -> None:
        """Recorded firings the simulation did not repeat: their actions are removed (those
        of timers set by events before the replayed ones are left out)."""
        self.report.pending_timers = len(self.pending)
        for (_, _, trigger_id), record in self.firings.items():
            if trigger_id in self.replayed:
                self.report.changes.append(compare(record, _jobs(self.state, record.event_id), []))
            else:
                why = f"its timer was set by {trigger_id}, before the replayed events"
                self.report.skipped.append((record.event_id, why))


def compare(record: EventRecord, then: list[Action], now: list[Action]) -> Change:
    """Pair actions of the same rule and action in order; the rest were added or removed."""
    change = Change(record)
    remaining = list(then)
    for new in now:
        old = next((a for a in remaining if a.key == new.key), None)
        if old is None:
            change.added.append(new)
            continue
        remaining.remove(old)
        if old.params == new.params:
            change.unchanged.append(new)
        else:
            change.changed.append((old, new))
    change.removed = remaining
    return change


def param_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (then, now)}`` for each parameter that differs."""
    names = list(old) + [name for name in new if name not in old]
    return {n: (old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)}


# -- output ------------------------------------------------------------------------------------


def as_document(
    report: Report, *, show_all: bool = False, show_content: bool = False
) -> dict[str, Any]:
    """The ``--format json`` document."""
    events = []
    for change in report.changes:
        if not (change.differs or show_all):
            continue
        hidden: PersonalValues | set[str] = (
            set() if show_content else hidden_values(change.record.data)
        )
        events.append(
            {
                "event_id": change.record.event_id,
                "channel": change.record.channel,
                "event": change.record.event,
                "processed_at": change.record.processed_at.isoformat(),
                "added": [hide(_action(a), hidden) for a in change.added],
                "removed": [hide(_action(a), hidden) for a in change.removed],
                "changed": [
                    hide(
                        {
                            "rule": new.rule,
                            "action": new.action,
                            "params": {
                                name: {"then": a, "now": b}
                                for name, (a, b) in param_changes(old.params, new.params).items()
                            },
                        },
                        hidden,
                    )
                    for old, new in change.changed
                ],
                "unchanged": len(change.unchanged),
                "errors": hide(change.errors, hidden),
            }
        )
    return {
        "summary": report.summary(),
        "events": events,
        "skipped": [{"event_id": event_id, "reason": why} for event_id, why in report.skipped],
    }


def _action(action: Action) -> dict[str, Any]:
    return {"rule": action.rule, "action": action.action, "params": action.params}


def as_text(report: Report, *, show_all: bool = False, show_content: bool = False) -> str:
    """Per changed event what would change, then the summary."""
    import json

    def show(value: Any, hidden: PersonalValues | set[str]) -> str:
        return _clip(json.dumps(hide(value, hidden), ensure_ascii=False, sort_keys=True))

    lines: list[str] = []
    for change in report.changes:
        if not (change.differs or show_all):
            continue
        record = change.record
        hidden: PersonalValues | set[str] = set() if show_content else hidden_values(record.data)
        lines.append(f"{record.event_id}  {record.event} on {record.channel}")
        for action in change.added:
            lines.append(f"  + {action.action} ({action.rule}) {show(action.params, hidden)}")
        for action in change.removed:
            lines.append(f"  - {action.action} ({action.rule}) {show(action.params, hidden)}")
        for old, new in change.changed:
            lines.append(f"  ~ {new.action} ({new.rule})")
            for name, (a, b) in param_changes(old.params, new.params).items():
                lines.append(f"      {name}: {show(a, hidden)} → {show(b, hidden)}")
        for error in change.errors:
            lines.append(f"  ! {hide(error, hidden)}")
        if not change.differs:
            lines.append(f"  = {len(change.unchanged)} action(s), unchanged")
    for event_id, why in report.skipped:
        lines.append(f"{event_id}  skipped: {why}")
    summary = report.summary()
    if lines:
        lines.append("")
    lines.append(
        f"{summary['events']} event(s) replayed, {summary['changed_events']} would change: "
        f"{summary['actions_added']} action(s) added, {summary['actions_removed']} removed, "
        f"{summary['actions_changed']} changed"
        + (f", {summary['errors']} error(s)" if summary["errors"] else "")
        + (f"; {summary['skipped_events']} skipped" if summary["skipped_events"] else "")
    )
    for rule, counts in summary["rules"].items():
        lines.append(
            f"  rule {rule}: fired on {counts['events_then']} event(s) then, "
            f"{counts['events_now']} now"
        )
    if summary["pending_timers"]:
        lines.append(f"  {summary['pending_timers']} timer(s) not due yet")
    lines.append(f"note: {COOLDOWN_NOTE}; {TIMER_NOTE}")
    return text_lines(lines)


def _clip(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
