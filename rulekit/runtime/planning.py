"""Turning events into recorded plans without holding the store while rules run.

Three steps, shared by the processor (inbox items) and the dispatcher (events actions emit):

1. :func:`prepare` — in a transaction that is **rolled back**, the provider normalizes the body
   (its calls on the state are recorded, see :mod:`rulekit.store.recording`), and the marks and
   records the evaluation depends on are read: the request for the worker is built;
2. the evaluation worker evaluates it, with no transaction open and no lock held;
3. :func:`record` — in one committed transaction, the provider's calls are replayed (checking
   the state answers as it did; their writes are applied again), the cooldown marks the
   evaluation read are checked, the events are recorded with their traces and jobs, and the
   plans' marks are set. When anything changed in between, :class:`StateChanged` is raised and
   the caller starts over from step 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rulekit.channels.base import ChannelTimer, channel_timer_rule
from rulekit.errors import StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.replies import note_replies
from rulekit.runtime.worker import Evaluation, Refusal, Request
from rulekit.store.base import JournaledState, JournaledStore, State
from rulekit.store.recording import Recording, RecordingState, StateChanged, Unwritten
from rulekit.store.records import JobSpec
from rulekit.team import TeamFacts

__all__ = [
    "Prepared",
    "Processed",
    "StateChanged",
    "prepare",
    "prepare_together",
    "record",
    "refused",
    "team_facts",
]


@dataclass
class Processed:
    """What one event led to, for the feed and the metrics."""

    event: Event
    recorded: bool
    matched: list[str] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    inbox_id: int | None = None
    timers: int = 0
    """How many timers the event set."""

    def message(self) -> dict[str, Any]:
        event = self.event
        return {
            "type": "event",
            "event_id": event.id,
            "channel": event.channel,
            "event": event.event,
            "origin": event.origin,
            "conversation_id": event.conversation.id,
            # what an agent's list shows at once (the feed goes only to agents of the channel)
            "client_name": event.client.name or event.client.display_name,
            "text": _preview(event.message.text),
            "inbox_id": self.inbox_id,
            "duplicate": not self.recorded,
            "matched": self.matched,
            "actions": [{"rule": j.rule, "action": j.action} for j in self.jobs],
            "errors": self.errors,
        }


PREVIEW = 300
"""Characters of a message's text the live feed carries (the thread has it all)."""


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW:
        return text
    return text[: PREVIEW - 1] + "…"


@dataclass
class Prepared:
    """Events ready for the worker, and what they were derived from."""

    events: list[Event]
    request: Request
    recording: Recording = field(default_factory=Recording)


class _RollBack(Exception):
    pass


def prepare(
    store: JournaledStore,
    parse: Callable[[State], list[Event]] | None = None,
    events: list[Event] | None = None,
    *,
    team: bool = False,
) -> Prepared:
    """Normalize (``parse``, given the state) or take ``events``, in a transaction that is rolled
    back, and read what their evaluation needs (with ``team``, the rules read ``team``: the
    team's presence and open counts too)."""
    prepared: Prepared | None = None
    try:
        with store.transaction() as state:
            unwritten = Unwritten(state)
            recording = RecordingState(unwritten)
            found = _normalized(recording, parse, events)
            facts = team_facts(unwritten) if team and found else None
            prepared = Prepared(found, _requests(state, [found], facts)[0], recording.recording)
            raise _RollBack
    except _RollBack:
        pass
    assert prepared is not None
    return prepared


def prepare_together(
    store: JournaledStore, parses: list[Callable[[State], list[Event]]], *, team: bool = False
) -> list[Prepared | Exception]:
    """:func:`prepare` for several bodies in one transaction that is rolled back (one wait for
    the store instead of one per body): for each, in order, what to evaluate; the first that
    cannot be normalized ends the list with the exception (those after it are not read). A
    body is normalized after the ones before it, as if they had been recorded; should one of
    them not be, :func:`record` finds the state changed."""
    out: list[Prepared | Exception] = []
    try:
        with store.transaction() as state:
            parsed: list[tuple[list[Event], RecordingState]] = []
            failed: Exception | None = None
            unwritten = Unwritten(state)  # a body reads what the ones before it wrote
            for parse in parses:
                recording = RecordingState(unwritten)
                try:
                    parsed.append((_normalized(recording, parse), recording))
                except StoreUnavailable:
                    raise
                except Exception as exc:
                    failed = exc
                    break
            # what the evaluations need, read once for all (normalizing sets no mark, records
            # no event: reading after the last body is reading after each)
            groups = [found for found, _ in parsed]
            facts = team_facts(unwritten) if team and any(groups) else None
            requests = _requests(state, groups, facts)
            for (found, recording), request in zip(parsed, requests, strict=True):
                out.append(Prepared(found, request, recording.recording))
            if failed is not None:
                out.append(failed)
            raise _RollBack
    except _RollBack:
        pass
    return out


def _normalized(
    recording: RecordingState,
    parse: Callable[[State], list[Event]] | None,
    events: list[Event] | None = None,
) -> list[Event]:
    """One body's events (``parse`` on ``recording``, else ``events``) with their
    conversations' reply times noted: every path that turns a body into events goes through
    here."""
    found = parse(recording) if parse is not None else list(events or ())
    for event in found:
        note_replies(recording, event)
    return found


def _requests(
    state: JournaledState, groups: list[list[Event]], team: TeamFacts | None = None
) -> list[Request]:
    """The requests for the events of several bodies, read in two queries."""
    events = [event for group in groups for event in group]
    conversations = list(dict.fromkeys(e.conversation.id for e in events if e.conversation.id))
    marks = state.cooldowns_for(conversations) if conversations else {}
    recorded = state.recorded([event.id for event in events]) if events else set()
    return [_one_request(group, marks, recorded, team) for group in groups]


def team_facts(state: State) -> TeamFacts:
    """The team's presence and open counts as ``state`` has them now (the conversations the
    bodies just normalized included, as a dry run counts them). Read from the state, never
    through a provider's recording: presence changes with time alone, and replaying it would
    find the state changed again and again."""
    return TeamFacts.of(state.presence(), state.open_conversations_by_assignee())


def _one_request(
    events: list[Event],
    marks: dict[str, dict[str, Any]],
    recorded: set[str],
    team: TeamFacts | None = None,
) -> Request:
    conversations = {event.conversation.id for event in events if event.conversation.id}
    cooldowns = {conversation: marks.get(conversation, {}) for conversation in conversations}
    skip = frozenset(event.id for event in events if event.id in recorded)
    return Request(events, cooldowns, skip, team=team)


def record(
    state: JournaledState,
    prepared: Prepared,
    answer: list[Evaluation] | Refusal,
    *,
    inbox_id: int | None,
    schedule: Callable[[Event], list[ChannelTimer]] | None = None,
) -> list[Processed]:
    """Commit step: replay, check, record (raises :class:`StateChanged` when stale).
    ``schedule`` is the provider's :meth:`~rulekit.channels.base.Provider.channel_timers`:
    the timers it asks for are set with the events recorded."""
    prepared.recording.replay(state)
    evaluations = (
        {e.event_id: e for e in answer}
        if not isinstance(answer, Refusal)
        else {e.id: refused(e, answer) for e in prepared.events}
    )
    out = []
    for event in prepared.events:
        channel_timers = 0
        evaluation = evaluations.get(event.id)
        if evaluation is None:  # recorded before: a redelivery
            out.append(Processed(event, False, inbox_id=inbox_id))
            continue
        for rule, conversation_id, seen in evaluation.cooldowns_read:
            if state.cooldown_until(rule, conversation_id) != seen:
                raise StateChanged(f"the cooldown of {rule!r} on {conversation_id} changed")
        recorded = state.record_event(
            event, inbox_id=inbox_id, trace=evaluation.trace, jobs=evaluation.jobs
        )
        if recorded:
            for rule, conversation_id, until in evaluation.cooldowns:
                state.set_cooldown(rule, conversation_id, until)
            # timers live and die with the record of the event that set or cancelled them
            for rule, conversation_id in evaluation.cancels:
                state.cancel_timers(rule, conversation_id, by_event=event.id)
            for rule, conversation_id, due, restart in evaluation.timers:
                state.set_timer(
                    rule, conversation_id, event.channel, due, event.id, restart=restart
                )
            for timer in schedule(event) if schedule is not None else []:
                rule = channel_timer_rule(event.channel, timer.name)
                state.set_timer(
                    rule, timer.conversation_id, event.channel, timer.due, event.id, restart=True
                )
                channel_timers += 1
        elif evaluation.cooldowns:
            # evaluated as new, yet recorded meanwhile: later events saw marks never set
            raise StateChanged(f"event {event.id} was recorded meanwhile")
        out.append(
            Processed(
                event,
                recorded,
                evaluation.matched,
                evaluation.jobs if recorded else [],
                evaluation.errors,
                inbox_id,
                len(evaluation.timers) + channel_timers if recorded else 0,
            )
        )
    return out


def refused(event: Event, refusal: Refusal) -> Evaluation:
    """The record of an event whose evaluation was refused: no actions, the reason as error."""
    return Evaluation(
        event_id=event.id,
        jobs=[],
        trace={"rules_version": None, "rules": [], "plan": [], "errors": [refusal.reason]},
        matched=[],
        errors=[refusal.reason],
        cooldowns=[],
    )
