"""The action contract: parameters, dry-run description, and execution.

An action class declares:

* ``name`` — what a rule's ``do:`` list writes (``slack``);
* ``Params`` — the pydantic model of its parameters, validated when rules load (templates are
  rendered first, then the rendered values are validated again);
* ``markup`` and :meth:`escape` — whether the action sends markup, and which leaf of its
  rendered parameters is which markup: values interpolated into templates are then escaped
  for the exact place they land (see :mod:`rulekit.expr.markup`; literal template text stays the
  admin's markup);
* ``integration`` and ``Integration`` — the config section (``integrations: {slack: ...}``) and
  its model, when the action talks to an outside service;
* ``client_facing`` — whether it writes to the client (then ``recovered`` events are skipped
  unless the rule says otherwise);
* ``changes_conversation`` and :meth:`Action.planned_change` — whether it changes the
  conversation's state (assignee, group, tags, priority, fields), and how: a plan is a
  sequence, so the engine applies the change to the conversation the later conditions and
  templates of the same plan see;
* ``sees_conversation`` — whether it executes with the conversation as the store holds it when
  its turn comes (an ``autoreply`` is sent as the agent an earlier ``assign`` of its plan set).

An instance is built per loaded config with the integration's settings (or ``None`` when the
config has none), describes what it would do (``rulekit test``), and executes (``rulekit run``).
It may keep network clients between calls (one Slack client, one Telegram bot); whoever built
it calls :meth:`Action.aclose` when done. :meth:`Action.pacing` names the rate limits a call is
subject to, for :class:`rulekit.actions.pacing.Pacer`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from rulekit.actions.pacing import Limit, Pace
from rulekit.event import Conversation, Event
from rulekit.expr.markup import Interpolations, map_leaves
from rulekit.models import StrictModel

if TYPE_CHECKING:
    from rulekit.channels.base import Provider
    from rulekit.channels.hookrunner import HookRunner
    from rulekit.config import Config
    from rulekit.store.base import State, Store

DEFAULT_TIMEOUT = 10.0
"""Seconds an action may take before it counts as a (retryable) timeout."""


@dataclass
class ActionContext:
    """What an action sees when it describes or executes one planned call."""

    event: Event
    config: Config
    provider: Provider | None = None
    """The provider of the event's channel (``autoreply`` writes through it)."""
    store: Store | None = None
    """Conversation state (``assign`` reads and changes it); None in a pure dry run."""
    publish: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None
    """Publishes to the daemon's live stream (``play_sound``); None when nothing listens."""
    emitted: list[Event] = field(default_factory=list)
    """Events the action caused (origin ``rulekit``), e.g. ``assigned``."""
    delivery: str | None = None
    """An id of this call, the same on every retry of one outbox job (see :func:`delivery_id`);
    None in a dry run."""
    job_id: int | None = None
    """The outbox job this call is of; None in a dry run or a call outside the dispatcher."""
    progress: Mapping[str, Any] | None = None
    """What earlier attempts of this job got done before they failed, as their action said
    (:attr:`~rulekit.errors.ActionError.progress`): the call goes on from there (an email is
    not sent again to the recipients who took it). None: nothing, or a dry run."""
    lease: float | None = None
    """Seconds the daemon holds the job from the call's start: past them another daemon may
    take the job and make the call again, so an action that waits inside :meth:`Action.execute`
    (for a pacing slot of its own) gives up waiting in time to finish within them. None: no
    bound (a dry run, a call outside the dispatcher)."""
    decided_later: frozenset[str] = frozenset()
    """In a dry run: conversation attributes an earlier action of the plan decides only when it
    runs (after an ``assign`` by strategy, ``assignee``)."""
    online: frozenset[str] | None = None
    """In a dry run: the agents the simulation has online (lower-cased emails); None:
    everyone (a suite's ``online:`` sets it)."""
    open_counts: Mapping[str, int] | None = None
    """In a dry run: the open conversations of each assignee (lower-cased email) in the
    simulation's state when the event was planned (what ``max_open`` is checked against); None:
    not known."""
    hooks: HookRunner | None = None
    """Where the provider's code runs while the daemon calls (off its event loop, within a
    budget: :func:`rulekit.channels.hookrunner.ask`); None: in place (a dry run)."""


@dataclass(frozen=True)
class StateChange:
    """What a call of a :attr:`~Action.changes_conversation` action did
    (:meth:`Action.change_state`)."""

    conversation: Conversation
    """The conversation after the call."""
    changed: dict[str, Any]
    """What changed (``changed`` of the ``updated`` event); empty when nothing did."""
    emitted: list[Event]
    """The events the change emits (``assigned``, ``updated``), origin ``rulekit``."""
    result: dict[str, Any]
    """What the call did, for the audit (the job's result)."""
    refused: str | None = None
    """Why the call changed nothing although asked to (``assign``: nobody eligible)."""

    def note(self) -> dict[str, Any]:
        """The note of the change made for a job
        (:meth:`~rulekit.store.outbox.Outbox.note_applied_change`): what the call answers,
        and the events it emitted."""
        return {
            "result": json.loads(json.dumps(self.result, default=str)),
            "emitted": [event.model_dump(mode="json") for event in self.emitted],
        }


def failure_note(error: str) -> dict[str, Any]:
    """The note of a change that could not be made as its event was recorded (the config
    refuses it, :attr:`Action.applied_when_recorded`): its job fails for good with ``error``
    when it runs."""
    return {"failed": error}


@dataclass(frozen=True)
class PlannedChange:
    """What a state-changing call will do to the conversation, as far as the plan can tell:
    the conversation after it, and the attributes only the call itself decides (an ``assign``
    by strategy picks its agent when it runs: ``{"assignee"}``)."""

    conversation: Conversation
    decided_later: frozenset[str] = frozenset()


def delivery_id(event_id: str, job_id: int) -> str:
    """The stable id of outbox job ``job_id`` (of event ``event_id``): opaque, 32 hex digits,
    the same on every attempt, so receivers can de-duplicate (``X-Rulekit-Delivery``)."""
    return hashlib.sha256(f"{event_id}\0{job_id}".encode()).hexdigest()[:32]


def conversation_lane(channel: str, conversation_id: str) -> str:
    """The lane of a conversation's unpaced jobs (:meth:`Action.lane`)."""
    return f"conversation:{channel}:{conversation_id}"


def changes_lane(channel: str, conversation_id: str) -> str:
    """The lane of the jobs of a conversation's changes made as their event was recorded
    (:attr:`Action.applied_when_recorded`): their events are handed over in order, behind
    nothing else."""
    return f"changes:{channel}:{conversation_id}"


def is_changes_lane(lane: str) -> bool:
    """Whether ``lane`` is a conversation's lane of changes (:func:`changes_lane`)."""
    return lane.startswith("changes:")


def call_key(place: int, attempts: int = 0) -> str:
    """What tells a call apart from the other calls of its event's plan (``call`` of
    :meth:`Action.change_state`): its place among the plan's actions that run (0 for the
    first), the same in the daemon and in ``rulekit test``, and on every retry of its job;
    with the attempts its job had recorded before, when any (a finished job requeued by hand
    makes its change anew)."""
    return f"{place}" if not attempts else f"{place}.{attempts}"


class Action:
    """Base class of actions."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[StrictModel]]
    integration: ClassVar[str | None] = None
    Integration: ClassVar[type[BaseModel] | None] = None
    markup: ClassVar[bool] = False
    """Whether parameters may be markup (then :meth:`escape` puts values in; else they go in as
    they are)."""
    read_by_people: ClassVar[bool] = False
    """Whether a ``markup`` action's messages are read by the team (Slack, Telegram, email):
    values its templates put in lose their bidi control characters, so that a client's value
    cannot reorder the text around it (who wrote what) nor disguise itself."""
    client_facing: ClassVar[bool] = False
    replies_through_channel: ClassVar[bool] = False
    """Whether it writes through the conversation's own channel (the provider's reply API):
    then a channel that cannot reply is reported as not configured."""
    calls_channel_service: ClassVar[bool] = False
    """Whether it calls the conversation's channel service through its provider (a reply, a
    change of client data): such calls share the channel's service-wide pauses, so a rate
    limit met by one (a Chatra 429) holds back all of them for the time the service asked."""
    console_role: ClassVar[str | None] = None
    """What the agents' console does with this action: ``"reply"`` (an agent's reply:
    parameters ``text`` and ``as_agent``), ``"client"`` (a change of client data: parameters
    ``name``, ``email``, ``phone``, ``notes``), ``"assign"``, ``"tags"`` or ``"set"`` (an
    agent's change of the conversation's assignee, tags or priority, made with
    :meth:`change_state`), or nothing (None)."""
    changes_conversation: ClassVar[bool] = False
    """Whether a call changes the conversation's state: see :meth:`planned_change`."""
    changes: ClassVar[frozenset[str]] = frozenset()
    """Which conversation attributes a call may change (``assignee``, ``group``, ``tags``,
    ``priority``, ``fields``)."""
    applied_when_recorded: ClassVar[bool] = False
    """Whether a call is a change of the stored conversation alone (:meth:`change_state`: no
    outside service, nothing that depends on when it runs), made in the transaction that
    records the event that planned it, in plan order, so that the next event of the
    conversation is evaluated against it (``tag``, ``set``). Its job then only hands over
    the events the change emitted, in a lane of its own (:func:`changes_lane`): it never
    waits behind a reply being retried."""
    sees_conversation: ClassVar[bool] = False
    """Whether a call executes with the conversation as the store holds it when the call's turn
    comes (the earlier actions of its lane applied) rather than as the event carried it."""
    timeout: float = DEFAULT_TIMEOUT
    bounds_calls: ClassVar[bool] = False
    """Whether :meth:`execute` ends a call that takes longer than :attr:`timeout` itself, as a
    retryable failure (``slack`` and ``email`` do). The dispatcher otherwise adds a timer of
    its own around every call, a little longer than ``timeout``, for an action that would
    not."""
    limits: dict[str, Limit] = {}
    """The service's rate limits by name (e.g. ``chat``, ``bot``), used by :meth:`pacing`."""

    def __init__(
        self,
        settings: BaseModel | None = None,
        *,
        limits: dict[str, Limit] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.limits = {**type(self).limits, **(limits or {})}
        if timeout is not None:
            self.timeout = timeout

    def __repr__(self) -> str:
        # never the settings: they hold credentials
        return f"<{type(self).__name__} action {self.name!r}>"

    @classmethod
    def escape(cls, values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
        """For a ``markup`` action: the rendered ``params`` (every string leaf may hold
        placeholders of ``values``) with each value put in, escaped for the markup of its leaf
        and its position there. Every leaf must be resolved; this default takes all as plain
        text."""
        return {key: map_leaves(value, values.plain_text) for key, value in params.items()}

    @classmethod
    def check(cls, params: BaseModel, channels: list[str], config: Config) -> list[str]:
        """Load-time cross-checks against the config; returns error messages (may be empty)."""
        return []

    @classmethod
    def lint(cls, params: BaseModel, config: Config) -> list[str]:
        """Load-time warnings: what works but is risky (``rulekit check --strict`` refuses it),
        e.g. a webhook sent over plain ``http://``."""
        return []

    @classmethod
    def sounds(cls, config: Config) -> dict[str, Path]:
        """Sounds this action may ask the agents' consoles to play, by name, with their files
        (the console serves them at ``/console/sounds/<name>`` to signed-in agents)."""
        return {}

    @classmethod
    def lint_on(cls, params: BaseModel, channels: list[str], config: Config) -> list[str]:
        """Load-time warnings that depend on the channels the rule listens on (like
        :meth:`lint`: what will fail at run time, refused by ``--strict``)."""
        return []

    @classmethod
    def faces_client(cls, params: BaseModel) -> bool:
        """Whether a call with ``params`` writes to the client (then ``recovered`` events are
        skipped unless ``on_recovered`` is set); :attr:`client_facing` by default."""
        return cls.client_facing

    @classmethod
    def planned_change(cls, params: BaseModel, event: Event, config: Config) -> PlannedChange:
        """For a :attr:`changes_conversation` action: the conversation as a call with
        ``params`` leaves the conversation of ``event`` (the event as the plan so far left it),
        as far as known when the plan is made (pure: no I/O). The engine hands it to the later
        conditions and templates of the plan."""
        return PlannedChange(event.conversation)

    def change_state(
        self, params: BaseModel, event: Event, state: State, config: Config, *, call: str = ""
    ) -> StateChange:
        """For a :attr:`changes_conversation` action: make a call with ``params`` on the
        conversation of ``event`` as ``state`` holds it, in the caller's transaction (no other
        I/O), and say what it did, with the events it emits (``updated``). :meth:`execute`
        runs it in a transaction of its own; the agents' console runs it for an agent's change
        (its events then carry ``origin: console`` and the agent). ``call`` tells this call
        apart from the other calls ``event``'s plan makes (:func:`call_key`): the ids of the
        events it emits are made of it, so that the same change made twice under one event
        (a tag added, removed and added again) is two events. Raises
        :class:`rulekit.errors.PermanentActionError` for a call the config refuses."""
        raise NotImplementedError(f"action {self.name!r} does not change the conversation")

    def simulate(
        self, params: BaseModel, event: Event, state: State, config: Config, *, call: str = ""
    ) -> list[Event]:
        """For a dry run: make in ``state`` (the simulation's, in its open transaction) the
        change a call with ``params`` makes in the daemon's store, with the very code
        :meth:`execute` runs, and return the events the call emits. A
        :attr:`changes_conversation` action makes its :meth:`change_state`; an action that
        writes other state overrides this; the others change nothing. Raises
        :class:`rulekit.errors.ActionError` for a call that would fail before changing
        anything. ``call`` is :meth:`change_state`'s."""
        if self.changes_conversation:
            return self.change_state(params, event, state, config, call=call).emitted
        return []

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        """Why this action would fail as configured ("Slack is not configured"), or None."""
        return None

    def would_fail(self, params: BaseModel, context: ActionContext) -> str | None:
        """Why a call with these (rendered) ``params`` would fail at run time with this config,
        as far as can be told without making it (``rulekit test`` reports it per action), or
        None; :meth:`unavailable` by default."""
        return self.unavailable(context)

    def destination(self, params: BaseModel) -> str:
        """The key of the destination pacing applies to (a Slack channel, a Telegram chat)."""
        return self.name

    def lane(self, params: BaseModel, event: Event) -> str:
        """What orders this call among others (:attr:`rulekit.store.records.JobSpec.lane`): the
        jobs of one lane run one at a time, oldest first, on one daemon at a time. A paced
        action's lane is its destination (a Slack channel keeps its order); any other action's
        is the event's conversation (a client's replies, and an ``assign`` before the
        ``autoreply`` of one plan, keep theirs); an event without a conversation is its own.
        A change made as its event is recorded (:attr:`applied_when_recorded`) is in the
        conversation's lane of changes."""
        if self.pacing(params):
            return self.destination(params)
        if event.conversation.id is None:
            return f"event:{event.id}"
        if self.applied_when_recorded:
            return changes_lane(event.channel, event.conversation.id)
        return conversation_lane(event.channel, event.conversation.id)

    def pacing(self, params: BaseModel) -> list[Pace]:
        """The limits a call with ``params`` is subject to, destination first (see
        :mod:`rulekit.actions.pacing`); empty when the action needs no pacing."""
        return []

    def call_pacing(self, params: BaseModel, context: ActionContext) -> list[Pace]:
        """The limits of one call that depend on its event as well as on ``params`` (an
        email's recipients' domains, found in the event and the team), besides
        :meth:`pacing`'s. The dispatcher waits for them before the call takes one of the
        ``dispatcher.concurrency`` call slots, so a call waiting for its turn holds up no
        other destination; an action that paces itself inside :meth:`execute` names the same
        limits here. Empty by default."""
        return []

    def describe(self, params: BaseModel, context: ActionContext) -> str:
        """Exactly what :meth:`execute` would do, in one line, for ``rulekit test``."""
        return f"{self.name} {params.model_dump(mode='json')}"

    async def execute(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        """Do it. Returns a result for the audit (e.g. the message id the service gave).

        Raises :class:`rulekit.errors.RetryableActionError` or
        :class:`rulekit.errors.PermanentActionError`, keeping the service's own message.
        """
        raise NotImplementedError(f"action {self.name!r} cannot execute")

    async def aclose(self) -> None:
        """Release network clients kept between calls. The instance may be used again after."""
