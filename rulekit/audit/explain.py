"""``rulekit why EVENT_ID``: one recorded event, why each rule fired or not, the plan, and every
attempt of every action job with its outcome."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from rulekit.audit.privacy import (
    HIDDEN,
    client_label,
    hidden_values,
    hide,
    hide_event,
    hide_team,
)
from rulekit.engine.engine import Engine
from rulekit.engine.reasons import failure_reason
from rulekit.engine.trace import condition_state, in_full, planned_actions, rules_of
from rulekit.errors import RulekitError
from rulekit.safetext import text_lines
from rulekit.store.base import JournaledState
from rulekit.store.forms import PersonalValues
from rulekit.store.records import Attempt, EventRecord, InboxItem, Job, Timer
from rulekit.team import TeamFacts, describe_seen

SUGGESTIONS_SCANNED = 2000
"""How many recent events an unknown id is compared with."""


class UnknownEvent(RulekitError):
    """No event with this id was recorded."""


@dataclass
class Explanation:
    """Everything recorded about one event."""

    record: EventRecord
    jobs: list[tuple[Job, list[Attempt]]] = field(default_factory=list)
    inbox: InboxItem | None = None
    excluded: list[tuple[str, str]] | None = None
    """``(rule, reason)`` of each rule the index left out, when rebuilt (``--excluded``)."""
    excluded_note: str | None = None
    """Why they could not be rebuilt."""
    timers: list[Timer] = field(default_factory=list)
    """Timers the event set, cancelled, or fired as."""
    related: list[dict[str, Any]] = field(default_factory=list)
    """The data of the other events those timers name (the event that set one, the event a
    firing is recorded as): their content is hidden too where a timer's reason quotes it."""

    def hidden(self, show_content: bool) -> PersonalValues | set[str]:
        """What output hides: nothing with ``show_content``."""
        return set() if show_content else hidden_values(self.record.data, *self.related)


def rebuild_excluded(explanation: Explanation, engine: Engine) -> None:
    """Say why each rule the index left out was not a candidate, from ``engine``'s rules when
    they are the version the event was evaluated with."""
    from pydantic import ValidationError

    from rulekit.event import Event

    record = explanation.record
    recorded = record.trace.get("rules_version")
    if recorded != engine.version:
        explanation.excluded_note = (
            f"the event was evaluated with rules {recorded}, the current rules are "
            f"{engine.version}: the reasons of the rules left out cannot be rebuilt"
        )
        return
    try:
        event = Event.model_validate(record.data)
    except ValidationError as exc:
        explanation.excluded_note = f"the recorded event cannot be rebuilt: {failure_reason(exc)}"
        return
    candidates = {rule["name"] for rule in rules_of(record.trace)}
    team = TeamFacts.recorded(record.trace.get("team"))
    plan = engine.evaluate(event, explain=True, excluded=True, team=team)
    explanation.excluded = [
        (trace.name, trace.reason) for trace in plan.rules if trace.name not in candidates
    ]


def explain(state: JournaledState, event_id: str, *, raw: bool = False) -> Explanation:
    """Read one event's record, its jobs with their attempts, and with ``raw`` its inbox item.
    Raises :class:`UnknownEvent` (with close ids, if any) when it was never recorded."""
    record = state.get_event(event_id) or _by_log_id(state, event_id)
    if record is None:
        raise UnknownEvent(f"no event {event_id!r} was recorded{_close_ids(state, event_id)}")
    event_id = record.event_id  # (asked for by its log id: the event's own)
    jobs = [(job, state.attempts(job.id)) for job in state.jobs(event_id=event_id, limit=10_000)]
    inbox = state.get_inbox(record.inbox_id) if raw and record.inbox_id is not None else None
    try:
        timers = state.timers(event_id=event_id)
    except NotImplementedError:
        timers = []
    named = {t.trigger_event_id for t in timers} | {t.by_event for t in timers if t.by_event}
    named.discard(event_id)
    related = [other.data for other in map(state.get_event, sorted(named)) if other is not None]
    return Explanation(record, jobs, inbox, timers=timers, related=related)


LOG_IDS_SCANNED = 10_000
"""How many recent events of its channel an id as the log gives it is looked for among."""


def _by_log_id(state: JournaledState, named: str) -> EventRecord | None:
    """The recent event the daemon's log names ``named`` (``online-chat~3f9a0c1b2d4e``: see
    :func:`rulekit.runtime.logs.log_id`), if any."""
    from rulekit.runtime.logs import log_id

    channel, tilde, digest = named.rpartition("~")
    if not tilde or len(digest) != 12:
        return None
    key = state.log_key() or b""  # (none: no daemon ran on the store, none logged)
    recent = state.history(channel=channel or None, limit=LOG_IDS_SCANNED)
    return next((record for record in recent if log_id(record.event_id, key=key) == named), None)


def _close_ids(state: JournaledState, event_id: str) -> str:
    recent = [record.event_id for record in state.history(limit=SUGGESTIONS_SCANNED)]
    close = [known for known in recent if known.startswith(event_id)][:5]
    close = close or difflib.get_close_matches(event_id, recent, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


# -- output ------------------------------------------------------------------------------------


def as_document(
    explanation: Explanation, *, show_content: bool = False, raw: bool = False
) -> dict[str, Any]:
    """The ``--format json`` document."""
    record = explanation.record
    hidden = explanation.hidden(show_content)
    jobs = []
    for job, attempts in explanation.jobs:
        jobs.append(
            {
                "id": job.id,
                "rule": job.rule,
                "action": job.action,
                "destination": hide(job.destination, hidden),  # (made of the params)
                "params": hide(job.params, hidden),
                "status": job.status,
                "attempts": [
                    {
                        "at": attempt.at.isoformat(),
                        "outcome": attempt.outcome,
                        "error": hide(attempt.error, hidden),
                        "result": hide(attempt.result, hidden),
                    }
                    for attempt in attempts
                ],
                "last_error": hide(job.last_error, hidden),
                "result": hide(job.result, hidden),
                "next_attempt_at": job.next_attempt_at.isoformat(),
            }
        )
    document: dict[str, Any] = {
        "event_id": record.event_id,
        "channel": record.channel,
        "event": record.event,
        "conversation_id": record.conversation_id,
        "inbox_id": record.inbox_id,
        "occurred_at": record.occurred_at.isoformat(),
        "processed_at": record.processed_at.isoformat(),
        "data": record.data if show_content else hide_event(record.data, *explanation.related),
        "trace": _hidden_trace(record.trace, hidden),
        "jobs": jobs,
        "timers": [_timer_dict(timer, hidden) for timer in explanation.timers],
    }
    if explanation.excluded is not None:
        document["excluded"] = [
            {"name": name, "reason": hide(reason, hidden)} for name, reason in explanation.excluded
        ]
    if explanation.excluded_note:
        document["excluded_note"] = explanation.excluded_note
    if raw:
        document["raw"] = _raw_text(explanation.inbox, show_content)
    return document


def _hidden_trace(trace: dict[str, Any], hidden: PersonalValues | set[str]) -> Any:
    """The trace as ``--format json`` shows it: the hidden values hidden, in what the rules
    read of ``team`` too (a client's email is a key there)."""
    shown = hide(in_full(trace), hidden)
    team = trace.get("team")
    if isinstance(shown, dict) and isinstance(team, dict) and team:
        shown["team"] = hide_team(team, hidden)
    return shown


def _raw_text(inbox: InboxItem | None, show_content: bool) -> str | None:
    if inbox is None:
        return None
    if not inbox.body:
        return ""
    if not show_content:
        return HIDDEN
    return inbox.body.decode("utf-8", errors="replace")


def as_text(
    explanation: Explanation,
    *,
    timezone: tzinfo,
    show_content: bool = False,
    raw: bool = False,
) -> str:
    """Output for people."""
    record = explanation.record
    data = record.data if show_content else hide_event(record.data, *explanation.related)
    hidden = explanation.hidden(show_content)

    def when(value: datetime) -> str:
        return value.astimezone(timezone).strftime("%Y-%m-%d %H:%M:%S %Z")

    lines = [
        f"event {record.event_id}",
        f"  {record.event} on {record.channel}, conversation {record.conversation_id or '-'}, "
        f"client {client_label(record.data, show_content=show_content)}",
        f"  occurred {when(record.occurred_at)}, processed {when(record.processed_at)}",
    ]
    message = data.get("message") or {}
    if message.get("text") is not None:
        text = message["text"]
        if text == HIDDEN:
            text = f"{HIDDEN} (--show-content shows it)"
        lines.append(f"  message ({message.get('author') or '?'}): {_clip(text)}")
    if show_content:
        client = data.get("client") or {}
        shown = {k: v for k, v in client.items() if v not in (None, {}, []) and k != "id"}
        if shown:
            lines.append(f"  client data: {json.dumps(shown, ensure_ascii=False, default=str)}")
    version = record.trace.get("rules_version")
    lines.append("")
    lines.append(f"rules{f' (version {version})' if version else ''}")
    rules = rules_of(record.trace)
    if not rules:
        lines.append("  no rule listened to this event")
    for rule in rules:
        mark = "✓" if rule["matched"] else "✗"
        lines.append(f"  {mark} {rule['name']}: {hide(rule['reason'], hidden)}")
        for condition in rule["conditions"]:
            state = hide(condition_state(condition), hidden)
            lines.append(f"      {condition.get('source')}  →  {state}")
    for name, reason in explanation.excluded or []:
        lines.append(f"  ✗ {name}: {hide(reason, hidden)}")
    left_out = record.trace.get("excluded") or 0
    if left_out and explanation.excluded is None:
        lines.append(
            f"  … {left_out} more rule(s) of this channel and event were not candidates"
            " (--excluded says why)"
        )
    if explanation.excluded_note:
        lines.append(f"  ({explanation.excluded_note})")
    for error in record.trace.get("errors") or []:
        lines.append(f"  ! {hide(error, hidden)}")
    omitted = record.trace.get("errors_omitted")
    if isinstance(omitted, int) and omitted:
        lines.append(f"  ! … and {omitted} more error(s), not kept")
    team = record.trace.get("team")
    if isinstance(team, dict) and team:
        lines.append("")
        lines.append("team (as the rules read it)")
        lines.extend(f"  {line}" for line in describe_seen(hide_team(team, hidden)))

    lines.extend(_timer_lines(explanation, when, hidden))
    lines.append("")
    lines.append("plan")
    planned = planned_actions(record.trace)
    if not planned and not explanation.jobs:
        lines.append("  nothing to do")
    for action in planned:
        if action.get("skipped"):
            lines.append(
                f"  - {action.get('action')} ({action.get('rule')}): "
                f"skipped: {hide(action['skipped'], hidden)}"
            )
    for job, attempts in explanation.jobs:
        lines.append(
            f"  #{job.id} {job.action} ({job.rule}) → {hide(job.destination, hidden)}: "
            f"{job.status}, "
            f"{len(attempts)} attempt(s)"
        )
        params = json.dumps(hide(job.params, hidden), ensure_ascii=False, sort_keys=True)
        lines.append(f"      params {_clip(params, 160)}")
        for number, attempt in enumerate(attempts, 1):
            line = f"      attempt {number} at {when(attempt.at)}: {attempt.outcome}"
            if attempt.error:
                line += f", error: {_clip(str(hide(attempt.error, hidden)), 160)}"
            if attempt.result is not None:
                result = json.dumps(hide(attempt.result, hidden), ensure_ascii=False)
                line += f", result: {_clip(result, 120)}"
            lines.append(line)
        if job.status == "pending":
            lines.append(f"      next attempt at {when(job.next_attempt_at)}")
    if raw:
        lines.append("")
        body = _raw_text(explanation.inbox, show_content)
        if body is None:
            lines.append("raw payload: not kept (no inbox item, or purged by retention)")
        elif body == "":
            lines.append("raw payload: erased (retention or `rulekit forget`)")
        elif body == HIDDEN:
            lines.append(f"raw payload: {HIDDEN} (--show-content shows it)")
        else:
            lines.append("raw payload:")
            lines.extend(body.split("\n"))
    return text_lines(lines)


def _timer_dict(timer: Timer, hidden: PersonalValues | set[str]) -> dict[str, Any]:
    return {
        "id": timer.id,
        "rule": timer.rule,
        "conversation_id": timer.conversation_id,
        "due": timer.due.isoformat(),
        "status": timer.status,
        "set_by": timer.trigger_event_id,
        "by_event": timer.by_event,
        "finished_at": timer.finished_at.isoformat() if timer.finished_at else None,
        "reason": hide(timer.reason, hidden),
    }


def _timer_lines(
    explanation: Explanation, when: Callable[[datetime], str], hidden: PersonalValues | set[str]
) -> list[str]:
    """The timers section: set, cancelled, or fired by this event."""
    record = explanation.record
    fired = record.trace.get("timer")
    lines = []
    if isinstance(fired, dict):
        lines.append(
            f"  ⏱ timer of {fired.get('rule')!r} due {fired.get('due')}: {fired.get('outcome')}"
            f" ({fired.get('late_seconds')} s late)"
            + (f": {hide(fired['reason'], hidden)}" if fired.get("reason") else "")
        )
    for timer in explanation.timers:
        if timer.trigger_event_id == record.event_id:
            state: str = timer.status
            if timer.status == "cancelled":
                state += f" by event {timer.by_event}"
            elif timer.finished_at is not None:
                late = (timer.finished_at - timer.due).total_seconds()
                state += f" at {when(timer.finished_at)} ({late:.1f} s after due)"
                if timer.by_event:
                    state += f", recorded as event {timer.by_event}"
            if timer.reason:
                state += f": {hide(timer.reason, hidden)}"
            lines.append(
                f"  ⏱ set timer #{timer.id} of {timer.rule!r}, due {when(timer.due)}: {state}"
            )
        elif timer.status == "cancelled" and timer.by_event == record.event_id:
            lines.append(
                f"  ⏱ cancelled timer #{timer.id} of {timer.rule!r} "
                f"(set by event {timer.trigger_event_id})"
            )
    return ["", "timers", *lines] if lines else []


def _clip(text: str, width: int = 100) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
