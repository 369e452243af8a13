"""Turning events into recorded plans without holding the store while rules run.

Three steps, shared by the processor (inbox items) and the dispatcher (events actions emit):

1. :func:`prepare` — the provider normalizes the body (its calls on the state are recorded, see
   :mod:`rulekit.store.recording`; :func:`prepare_together`, the daemon's, with no transaction
   open), and in a transaction that is **rolled back** the marks and records the evaluation
   depends on are read: the request for the worker is built;
2. the evaluation worker evaluates it, with no transaction open and no lock held;
3. :func:`record` — in one committed transaction, the provider's calls are replayed (checking
   the state answers as it did; their writes are applied again), the cooldown marks the
   evaluation read are checked, the events are recorded with their traces and jobs, and the
   plans' marks are set. When anything changed in between, :class:`StateChanged` is raised and
   the caller starts over from step 1.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rulekit.actions.base import changes_lane
from rulekit.channels.base import ChannelTimer, channel_timer_rule
from rulekit.errors import StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.changes import Changes
from rulekit.runtime.replies import note_replies
from rulekit.runtime.worker import Evaluation, Refusal, Request
from rulekit.store.base import JournaledState, JournaledStore, State
from rulekit.store.cached import CachedState, probe
from rulekit.store.detached import detached
from rulekit.store.lookups import Lookups
from rulekit.store.recording import Recording, RecordingState, StateChanged
from rulekit.store.records import JobSpec, NewEvent
from rulekit.team import TeamFacts

__all__ = [
    "Changes",
    "Evaluated",
    "Prepared",
    "Processed",
    "StateChanged",
    "prepare",
    "prepare_together",
    "preview",
    "record",
    "record_many",
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
    team: dict[str, Any] | None = None
    """What the rules read of ``team`` deciding about the event, when they did."""

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
            "client_name": preview(event.client.name or event.client.display_name),
            "text": preview(event.message.text),
            "inbox_id": self.inbox_id,
            "duplicate": not self.recorded,
            "matched": self.matched[:MAX_FEED_RULES],
            "actions": [{"rule": j.rule, "action": j.action} for j in self.jobs[:MAX_FEED_RULES]],
            "errors": [preview(error) for error in self.errors[:MAX_FEED_ERRORS]],
            # how many each list left out (a rule set where thousands of rules fire at once)
            **_more("matched", self.matched, MAX_FEED_RULES),
            **_more("actions", self.jobs, MAX_FEED_RULES),
            # what the rules read of the team deciding: each console stream words it as
            # `team` for its viewer, as the event list does (rulekit.server.console.team)
            **(
                {"team_read": {"seen": self.team, "client_email": preview(event.client.email)}}
                if self.team
                else {}
            ),
        }


PREVIEW = 300
"""Characters of a message's text, and of any other text of the client's, the live feed
carries (the thread has it all): the daemon keeps the feed's recent messages, and each open
stream its own backlog of them."""
MAX_FEED_ERRORS = 20
"""The rules' errors of one event the live feed carries (the event's trace has as many)."""
MAX_FEED_RULES = 100
"""The matched rules, and the actions, of one event the live feed carries (the event's trace
and jobs have them all): the daemon keeps the feed's recent messages, and each stream its
backlog, so a message's size must not grow with the rule set."""


def _more(name: str, items: Sequence[object], kept: int) -> dict[str, int]:
    """``{"<name>_more": n}`` when ``items`` holds ``n`` more than ``kept``, else nothing."""
    return {f"{name}_more": len(items) - kept} if len(items) > kept else {}


def preview(text: str | None) -> str | None:
    """The start of a text, as the live feed carries it."""
    if not isinstance(text, str) or len(text) <= PREVIEW:
        return text
    return text[: PREVIEW - 1] + "…"


@dataclass
class Prepared:
    """Events ready for the worker, and what they were derived from."""

    events: list[Event]
    request: Request
    recording: Recording = field(default_factory=Recording)
    changes_pending: bool = False
    """Whether, when it was read, a conversation of the events had changes whose ``updated``
    events were not recorded yet (a job in its lane of changes, :func:`changes_lane`): read
    only when asked (``chains``)."""


class _RollBack(Exception):
    pass


def prepare(
    store: JournaledStore,
    parse: Callable[[State], list[Event]] | None = None,
    events: list[Event] | None = None,
    *,
    team: bool = False,
    chains: bool = False,
) -> Prepared:
    """Normalize (``parse``, given the state) or take ``events``, in a transaction that is rolled
    back, and read what their evaluation needs (with ``team``, the rules read ``team``: the
    team's presence and open counts too; with ``chains``, whether their conversations'
    changes are all recorded: :attr:`Prepared.changes_pending`)."""
    prepared: Prepared | None = None
    try:
        with store.transaction() as state:
            cached = _read_ahead(state, [parse] if parse else [], events)
            recording = RecordingState(cached)
            found = _normalized(recording, parse, events)
            facts = team_facts(cached) if team and found else None
            waits = chains and _changes_pending(state, [found])[0]
            prepared = Prepared(
                found, _requests(state, [found], facts)[0], recording.recording, waits
            )
            raise _RollBack
    except _RollBack:
        pass
    assert prepared is not None
    return prepared


def prepare_together(
    store: JournaledStore,
    parses: list[Callable[[State], list[Event]]],
    *,
    team: bool = False,
    chains: bool = False,
) -> list[Prepared | Exception]:
    """:func:`prepare` for several bodies: for each, in order, what to evaluate; the first that
    cannot be normalized ends the list with the exception (those after it are not read). A
    body is normalized after the ones before it, as if they had been recorded; should one of
    them not be, :func:`record` finds the state changed. With ``chains`` (rules react to
    rulekit's own events), each says whether its conversations' changes are all recorded
    (:attr:`Prepared.changes_pending`).

    The bodies are normalized with **no transaction open**: ``parses`` are a provider's code,
    which may be slow or stuck on a body (the processor runs them within a budget), and the
    store's write lock must not wait for them. What they read is read from the store each
    time in a reading of its own (a snapshot that holds no writer back), what they write is
    kept in memory (:class:`~rulekit.store.cached.CachedState`); it is all recorded, and
    :func:`record` replays it against the state as it is then. Only what the project's code
    reads after (the replies noted, the marks and records the evaluations need) is read in
    one transaction, rolled back."""
    out: list[Prepared | Exception] = []
    batches = _batches(store)
    cached = CachedState(detached(store, batches=batches))
    if batches:
        wanted = probe([partial(_parsed, parse=parse) for parse in parses])
        with store.reading() as state:
            cached.state = state
            cached.prefetch(wanted)
        cached.state = detached(store, batches=batches)
    parsed: list[tuple[list[Event], RecordingState]] = []
    failed: Exception | None = None
    for parse in parses:
        recording = RecordingState(cached)
        try:
            parsed.append((_parsed(recording, parse), recording))
        except StoreUnavailable:
            raise
        except Exception as exc:
            failed = exc
            break
    try:
        # the writer's transaction, rolled back: a snapshot on SQLite's reader connection would
        # hold no writer back, yet halved the daemon's throughput when measured
        with store.transaction() as state:
            cached.state = state
            for found, recording in parsed:
                for event in found:
                    note_replies(recording, event)
            # what the evaluations need, read once for all (normalizing sets no mark, records
            # no event: reading after the last body is reading after each)
            groups = [found for found, _ in parsed]
            facts = team_facts(cached) if team and any(groups) else None
            requests = _requests(state, groups, facts)
            pending = _changes_pending(state, groups) if chains else [False] * len(groups)
            for (found, recording), request, waits in zip(parsed, requests, pending, strict=True):
                out.append(Prepared(found, request, recording.recording, waits))
            if failed is not None:
                out.append(failed)
            raise _RollBack
    except _RollBack:
        pass
    return out


_BATCHES: weakref.WeakKeyDictionary[JournaledStore, bool] = weakref.WeakKeyDictionary()


def _batches(store: JournaledStore) -> bool:
    """Whether ``store``'s state reads in batches (a database server: each read a round
    trip), asked once."""
    batches = _BATCHES.get(store)
    if batches is None:
        with store.reading() as state:
            batches = _BATCHES[store] = state.batches
    return batches


def _parsed(recording: State, parse: Callable[[State], list[Event]]) -> list[Event]:
    """One body's events, ``parse`` on ``recording``."""
    return parse(recording)


def _read_ahead(
    state: State,
    parses: list[Callable[[State], list[Event]]],
    events: list[Event] | None = None,
) -> CachedState:
    """``state`` behind a cache, holding already (on a store where each read is a round trip)
    what normalizing the bodies (``parses``) or noting the reply times of ``events`` will read,
    read in one query."""
    cached = CachedState(state)
    if state.batches:
        # a parse makes new events each time: probing one changes nothing it will return
        wanted = probe([partial(_normalized, parse=parse) for parse in parses])
        for event in events or ():
            if event.conversation.id:
                wanted.conversation_ids.add((event.channel, event.conversation.id))
        cached.prefetch(wanted)
    return cached


def _normalized(
    recording: State,
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


def _changes_pending(state: JournaledState, groups: list[list[Event]]) -> list[bool]:
    """For each body's events, whether a conversation of theirs has a job in its lane of
    changes: ``updated`` events still to be handed over, evaluated and recorded, and what the
    rules reacting to them change with them. Read in one query."""
    lanes = [
        {
            changes_lane(event.channel, event.conversation.id)
            for event in group
            if event.conversation.id
        }
        for group in groups
    ]
    wanted = sorted(set().union(*lanes)) if lanes else []
    pending = state.pending_lanes(wanted) if wanted else set()
    return [bool(group & pending) for group in lanes]


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


@dataclass
class Evaluated:
    """What the commit step records for one body (or one action's emitted events)."""

    prepared: Prepared
    answer: list[Evaluation] | Refusal
    inbox_id: int | None
    schedule: Callable[[Event], list[ChannelTimer]] | None = None
    """The provider's :meth:`~rulekit.channels.base.Provider.channel_timers`: the timers it
    asks for are set with the events recorded."""


def record(
    state: JournaledState,
    prepared: Prepared,
    answer: list[Evaluation] | Refusal,
    *,
    inbox_id: int | None,
    schedule: Callable[[Event], list[ChannelTimer]] | None = None,
    changes: Changes | None = None,
) -> list[Processed]:
    """Commit step: replay, check, record (raises :class:`StateChanged` when stale)."""
    return record_many(state, [Evaluated(prepared, answer, inbox_id, schedule)], changes)[0]


def record_many(
    state: JournaledState, evaluated: list[Evaluated], changes: Changes | None = None
) -> list[list[Processed]]:
    """The commit step of several bodies of different conversations, in order: their
    recordings replayed (every read at once and every write once: on a database server, in
    one query and one statement), then their events recorded; what each led to. With
    ``changes`` (those of the rules that planned them), the plans' changes of the
    conversation that need nothing else (``tag``, ``set``) are made as each event is
    recorded (:mod:`rulekit.runtime.changes`): the next event of the conversation is
    evaluated against them."""
    _replay(state, [item.prepared.recording for item in evaluated])
    evaluations = [_evaluations(item) for item in evaluated]
    # every event of the round in one batch (one statement on a database server); the marks
    # are checked and set afterwards, event by event in order, in the same transaction
    new = [
        NewEvent(event, item.inbox_id, found[event.id].trace, found[event.id].jobs)
        for item, found in zip(evaluated, evaluations, strict=True)
        for event in item.prepared.events
        if event.id in found
    ]
    recorded = iter(state.record_events(new))
    return [
        _record_events(state, item, found, recorded, changes)
        for item, found in zip(evaluated, evaluations, strict=True)
    ]


def _replay(state: JournaledState, recordings: list[Recording]) -> None:
    # through a cache on every store: every read of the round at once, and each conversation,
    # client and message mark written once, as recorded (no model validated and encoded again).
    # What is read is held until the commit: a change another transaction commits between the
    # check and the write would be written over (PostgreSQL runs several at once)
    cached = CachedState(state, hold=True)
    wanted = Lookups()
    for recording in recordings:
        wanted.update(recording.lookups())
    cached.prefetch(wanted)
    for recording in recordings:
        recording.replay(cached)
    taken = cached.flush()
    if taken:
        raise StateChanged(f"message ids {sorted(taken)} were marked seen meanwhile")


def _evaluations(item: Evaluated) -> dict[str, Evaluation]:
    """The evaluation of each event of ``item`` to record, by event id (a redelivered event
    has none)."""
    if isinstance(item.answer, Refusal):
        return {e.id: refused(e, item.answer) for e in item.prepared.events}
    return {e.event_id: e for e in item.answer}


def _record_events(
    state: JournaledState,
    item: Evaluated,
    evaluations: dict[str, Evaluation],
    recorded_in_order: Iterator[bool],
    changes: Changes | None = None,
) -> list[Processed]:
    prepared, inbox_id, schedule = item.prepared, item.inbox_id, item.schedule
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
        recorded = next(recorded_in_order)
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
            if changes is not None and evaluation.jobs:
                changes.make(state, event, evaluation.jobs)
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
                evaluation.team,
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
