"""``rulekit history``: recent events, one line each, with what was done about them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from rulekit.audit.privacy import client_label, hidden_values, hide, hide_team
from rulekit.engine.trace import matched_rules
from rulekit.models import parse_duration
from rulekit.safetext import text_lines
from rulekit.store.base import JournaledState, JournaledStore
from rulekit.store.records import EventRecord, Job
from rulekit.team import describe_seen

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def parse_since(value: str | None, now: datetime, zone: tzinfo | None = None) -> datetime | None:
    """``--since``: a duration back from ``now`` (``7d``, ``12h``, ``30m``) or an ISO 8601 time
    (a date, or a time without an offset, is read in ``zone``, the config's timezone, as the
    commands show times; else in ``now``'s)."""
    if value is None:
        return None
    value = value.strip()
    if _ISO_DATE.match(value):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an ISO 8601 time: {exc}") from None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone or now.tzinfo)
        try:
            parsed.astimezone(UTC)  # the stores compare times in UTC
        except OverflowError:
            raise ValueError(f"{value!r} is outside the years 1 to 9999 in UTC") from None
        return parsed
    duration: timedelta = parse_duration(value)
    try:
        return now - duration
    except OverflowError:
        raise ValueError(f"{value!r} reaches back before the year 1") from None


@dataclass
class HistoryLine:
    """One event with its jobs."""

    record: EventRecord
    jobs: list[Job]
    related: list[dict[str, Any]] = field(default_factory=list)
    """For an event a timer fired as: the data of the event that set the timer (the firing's
    reason may quote it)."""

    @property
    def outcomes(self) -> Counter[str]:
        return Counter(job.status for job in self.jobs)


PAGE = 500
"""Events read, and printed, at a time: ``rulekit history --limit 100000`` holds a page of
records (each with its trace) in memory, not all of them."""


def history(
    state: JournaledState,
    *,
    channel: str | None = None,
    event: str | None = None,
    rule: str | None = None,
    failed: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[HistoryLine]:
    """Recorded events, most recently processed first, with their jobs (``before``: those
    recorded before that event)."""
    records = state.history(
        channel=channel,
        event=event,
        rule=rule,
        failed=failed,
        since=since,
        limit=limit,
        before=before,
    )
    jobs = state.jobs_of_events([r.event_id for r in records])
    return [HistoryLine(r, jobs[r.event_id], _setters(state, r)) for r in records]


def history_pages(
    store: JournaledStore,
    *,
    channel: str | None = None,
    event: str | None = None,
    rule: str | None = None,
    failed: bool = False,
    since: datetime | None = None,
    limit: int = 50,
    page: int | None = None,
) -> Iterator[list[HistoryLine]]:
    """:func:`history`, :data:`PAGE` events at a time, each page read in a short read-only
    transaction of its own: the store's write-ahead log is never held while a page is
    printed (to a pager left open, say). The pages follow each other by the events' order of
    recording, so an event recorded meanwhile is not listed, and none is listed twice."""
    before: str | None = None
    left = limit
    while left > 0:
        wanted = min(left, page or PAGE)
        with store.reading() as state:
            lines = history(
                state,
                channel=channel,
                event=event,
                rule=rule,
                failed=failed,
                since=since,
                limit=wanted,
                before=before,
            )
        if lines:
            yield lines
        if len(lines) < wanted:
            return
        left -= len(lines)
        before = lines[-1].record.event_id


def _setters(state: JournaledState, record: EventRecord) -> list[dict[str, Any]]:
    if not isinstance(record.trace.get("timer"), dict):
        return []
    setters = {t.trigger_event_id for t in state.timers(event_id=record.event_id)}
    found = (state.get_event(event_id) for event_id in sorted(setters))
    return [other.data for other in found if other is not None]


def outcome_summary(line: HistoryLine) -> str:
    """``2 done, 1 dead``; ``no actions`` when the plan was empty."""
    if not line.jobs:
        return "no actions"
    counts = line.outcomes
    return ", ".join(
        f"{counts[status]} {status}" for status in ("done", "pending", "dead") if counts[status]
    )


def as_document(lines: list[HistoryLine], *, show_content: bool = False) -> dict[str, Any]:
    """The ``--format json`` document."""
    return {"events": [as_item(line, show_content=show_content) for line in lines]}


def as_item(line: HistoryLine, *, show_content: bool = False) -> dict[str, Any]:
    """One event of the ``--format json`` document."""
    record = line.record
    client = record.data.get("client") or {}
    item: dict[str, Any] = {
        "event_id": record.event_id,
        "channel": record.channel,
        "event": record.event,
        "conversation_id": record.conversation_id,
        "occurred_at": record.occurred_at.isoformat(),
        "processed_at": record.processed_at.isoformat(),
        "client": {
            "id": client.get("id"),
            "display_name": client.get("display_name") or client.get("name"),
        },
        "matched": matched_rules(record.trace),
        "jobs": [
            {"id": job.id, "rule": job.rule, "action": job.action, "status": job.status}
            for job in line.jobs
        ],
    }
    timers = timer_summary(line, show_content=show_content)
    if timers:
        item["timers"] = timers
    team = team_read(line, show_content=show_content)
    if team:
        item["team"] = team
    if show_content:
        item["client"]["email"] = client.get("email")
        item["message"] = (record.data.get("message") or {}).get("text")
    return item


def timer_summary(line: HistoryLine, *, show_content: bool = False) -> dict[str, Any]:
    """What the event did with timers: the rules whose timers it ``set`` and ``cancelled``,
    and for an event a timer fired as, the firing (``rule``, ``outcome``, ``late_seconds``,
    ``reason``). The reason goes through content hiding like any text that may quote a
    client (see :mod:`rulekit.audit.privacy`)."""
    record = line.record
    trace = record.trace
    out: dict[str, Any] = {}
    set_ = [t.get("rule") for t in trace.get("timers") or [] if isinstance(t, dict)]
    cancelled = [c.get("rule") for c in trace.get("cancels") or [] if isinstance(c, dict)]
    if set_:
        out["set"] = set_
    if cancelled:
        out["cancelled"] = cancelled
    fired = trace.get("timer")
    if isinstance(fired, dict):
        reason = str(fired.get("reason") or "")
        if reason and not show_content:
            reason = hide(reason, hidden_values(record.data, *line.related))
        out["fired"] = {
            "rule": fired.get("rule"),
            "outcome": fired.get("outcome"),
            "late_seconds": fired.get("late_seconds"),
            "reason": reason,
        }
    return out


def timer_note(line: HistoryLine, *, show_content: bool = False) -> str:
    """``  timers: set Nobody answered`` — what the event did with timers, for its line (a
    firing's reason clipped, hidden as in :func:`timer_summary`)."""
    summary = timer_summary(line, show_content=show_content)
    notes = [f"set {rule}" for rule in summary.get("set", [])]
    notes += [f"cancelled {rule}" for rule in summary.get("cancelled", [])]
    fired = summary.get("fired")
    if fired is not None:
        reason = " ".join(fired["reason"].split())
        reason = reason if len(reason) <= 80 else reason[:79] + "…"
        notes.append(f"{fired['rule']}: {fired['outcome']}" + (f" ({reason})" if reason else ""))
    return f"  timers: {', '.join(notes)}" if notes else ""


def team_read(line: HistoryLine, *, show_content: bool = False) -> dict[str, Any]:
    """What the rules read of ``team`` deciding about the event (empty: nothing), the client's
    email a rule passed to ``team.open_count()`` hidden as in :func:`timer_summary`."""
    team = line.record.trace.get("team")
    if not isinstance(team, dict) or not team:
        return {}
    return team if show_content else hide_team(team, hidden_values(line.record.data))


def team_note(line: HistoryLine, *, show_content: bool = False) -> str:
    """``  team: online: anna@…`` — the presence the rules read deciding about the event."""
    team = team_read(line, show_content=show_content)
    return f"  team: {'; '.join(describe_seen(team))}" if team else ""


def as_text(lines: list[HistoryLine], *, timezone: tzinfo, show_content: bool = False) -> str:
    """One line per event: time, id, channel, event, client, matched rules, outcomes."""
    if not lines:
        return "no recorded events match\n"
    out = []
    for line in lines:
        record = line.record
        when = record.processed_at.astimezone(timezone).strftime("%Y-%m-%d %H:%M:%S")
        matched = ", ".join(matched_rules(record.trace)) or "-"
        client = client_label(record.data, show_content=show_content)
        timers = timer_note(line, show_content=show_content)
        team = team_note(line, show_content=show_content)
        out.append(
            f"{when}  {record.event_id}  {record.channel}  {record.event}  {client}  "
            f"rules: {matched}  actions: {outcome_summary(line)}{timers}{team}"
        )
        text = (record.data.get("message") or {}).get("text")
        if show_content and text:
            out.append(f"    message: {text.replace(chr(10), ' ')[:100]}")
    return text_lines(out)
