"""``rulekit replay``: backtesting. Candidate rules run over recorded events, and what they would
do is compared with what the daemon enqueued then.

Pure: events are rebuilt from their audit records (``Event.public()``: no raw payload), the
engine evaluates them without a state, nothing is written and nothing is sent. Consequences:

* cooldowns are not replayed (every event is evaluated as if no cooldown were running), so a
  rule with a cooldown may show actions added that its cooldown would have held back;
* what a provider derives from its state (e.g. which messages are new) is as recorded then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from rulekit.audit.privacy import hidden_values, hide
from rulekit.engine.engine import Engine
from rulekit.event import Event
from rulekit.safetext import text_lines
from rulekit.store.base import JournaledState
from rulekit.store.forms import PersonalValues
from rulekit.store.records import EventRecord

COOLDOWN_NOTE = "cooldowns are not replayed: each event is evaluated as if none were running"


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
            "note": COOLDOWN_NOTE,
        }


def replay(
    state: JournaledState, engine: Engine, *, since: datetime | None = None, limit: int = 10_000
) -> Report:
    """Evaluate ``engine``'s rules over the events recorded since ``since`` (at most ``limit``,
    the most recent), oldest first, and compare each plan with the jobs recorded then."""
    report = Report()
    records = state.history(since=since, limit=limit)
    for record in reversed(records):
        try:
            event = Event.model_validate(record.data)
        except ValidationError as exc:
            report.skipped.append((record.event_id, f"cannot rebuild the event: {exc}"))
            continue
        then = [
            Action(job.rule, job.action, job.params)
            for job in state.jobs(event_id=record.event_id, limit=10_000)
        ]
        plan = engine.evaluate(event, None)
        now = [Action(a.rule, a.action, a.model.model_dump(mode="json")) for a in plan.runnable]
        change = compare(record, then, now)
        change.errors = list(plan.errors)
        report.changes.append(change)
    return report


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
    lines.append(f"note: {COOLDOWN_NOTE}")
    return text_lines(lines)


def _clip(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
