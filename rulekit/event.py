"""The normalized event: what every provider produces and every rule reads.

The field names are a contract (see docs/rules.md): fields may be added, never renamed.
Missing data is ``None`` (or empty), never an error: sub-objects are always present, so a rule
reading ``message.text`` on a ``closed`` event sees ``None`` rather than failing.
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from rulekit.countries import country_code
from rulekit.models import StrictModel

Priority = Literal["low", "normal", "high", "urgent"]
"""A conversation's priority, lowest first."""

PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")

Origin = Literal["channel", "rulekit", "console"]
"""Who caused an event: the channel (from outside), rulekit's own actions, or an agent in the
console."""

EVENT_NAMES: tuple[str, ...] = (
    "created",
    "message",
    "reopened",
    "album_part",
    "agent_replied",
    "closed",
    "client_updated",
    "assigned",
    "updated",
)
"""The event names of the contract, in the order docs list them."""


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


FORGOTTEN = "[forgotten]"
"""What ``rulekit forget`` writes over a string that carried personal data."""

MAX_OWN_CHAIN = 8
"""Events rulekit's own actions may cause one after another (an ``assign`` whose ``assigned``
makes a ``tag`` whose ``updated`` ...) before no rule reacts to the next: rules with
``allow_own_events`` that undo each other's change would otherwise go on for ever, each event
recorded with an id longer than the last. Kept short, for an event whose plan changes the
conversation twice causes two events, each of which may cause two more."""
MAX_OWN_EVENTS = 100
"""Events rulekit's own actions may cause under one event from outside, all chains together,
before no rule reacts to the next: a plan that changes the conversation twice makes two events,
each of which may make two more, so chains of :data:`MAX_OWN_CHAIN` alone allow 2^8 of them
(3^8 with three changes a plan), seconds of the daemon's work for one webhook."""
_EMITTED_KINDS = frozenset({"updated", "assigned"})
_HEX = frozenset("0123456789abcdef")


def emitted_id(cause_id: str, kind: str, digest: str) -> str:
    """The id of the ``kind`` event an action of ``cause_id``'s plan caused: the cause's id,
    the kind and 12 hex digits of what changed (stable for a redelivery of the same change);
    :func:`own_chain` reads how many such events led to one."""
    if kind not in _EMITTED_KINDS or len(digest) != 12 or not set(digest) <= _HEX:
        raise ValueError(f"not an emitted event's kind and digest: {kind!r}, {digest!r}")
    return f"{cause_id}/{kind}/{digest}"


def own_chain(event_id: str) -> int:
    """How many events of rulekit's own actions, each caused by the one before, end with
    ``event_id`` (0 for an event from outside), counted up to :data:`MAX_OWN_CHAIN` from the
    id's end (:func:`emitted_id`), in time linear in its length."""
    return _own_steps(event_id)[0]


def own_root(event_id: str) -> str:
    """The id of the event from outside whose plan began the chain that ends with
    ``event_id`` (``event_id`` itself for an event from outside): what
    :data:`MAX_OWN_EVENTS` counts by."""
    return _own_steps(event_id)[1]


def _own_steps(event_id: str) -> tuple[int, str]:
    depth, rest = 0, event_id
    while depth < MAX_OWN_CHAIN:
        head, slash, digest = rest.rpartition("/")
        cause, slash_too, kind = head.rpartition("/")
        if not (slash and slash_too and kind in _EMITTED_KINDS and len(digest) == 12):
            break
        if not set(digest) <= _HEX:
            break
        depth, rest = depth + 1, cause
    return depth, rest


def _unforgotten(model: type[BaseModel], data: Any) -> Any:
    """``data`` for ``model`` with each field that holds no free text (a time, a choice, a
    number) and reads ``[forgotten]`` given no value: ``None``, or its default when it cannot be
    ``None``. An earlier version of ``rulekit forget`` wrote ``[forgotten]`` over such values
    when a client's short personal value was part of one ("2024" of a time, "high" of a
    priority), and the records no longer loaded: the client's next message, a pending timer,
    the console and ``rulekit why`` failed on them."""
    if not isinstance(data, dict) or FORGOTTEN not in data.values():
        return data
    fixed = dict(data)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if fixed.get(key) != FORGOTTEN or _holds_text(field.annotation):
            continue
        if _nullable(field.annotation) or field.is_required():
            fixed[key] = None
        else:
            fixed[key] = field.get_default(call_default_factory=True)
    return fixed


def _kinds(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _nullable(annotation: Any) -> bool:
    return type(None) in _kinds(annotation)


def _holds_text(annotation: Any) -> bool:
    """Whether a field of this type may hold ``[forgotten]`` as a value of its own (a string,
    any value, a list or mapping of them)."""
    return any(
        kind is str or kind is Any or get_origin(kind) in (list, dict)
        for kind in _kinds(annotation)
        if kind is not type(None)
    )


class EventPart(StrictModel):
    """Base of the event's sub-objects."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    @model_validator(mode="before")
    @classmethod
    def _forgotten(cls, data: Any) -> Any:
        return _unforgotten(cls, data)


class Unchanged(dict[str, Any]):
    """``changed`` as conditions and templates read it: what did not change reads empty, on
    every event. A name it lacks reads ``{}`` (``changed.priority.to`` is none), ``tags`` reads
    ``{added: [], removed: []}`` and ``fields`` reads the same way (``changed.fields.plan.to``
    is none when ``plan`` did not change): a rule listening to ``updated`` and other events, or
    reading a field that did not change, needs no guard. It stays empty (false, no items) when
    nothing changed, as ``changed`` on events other than ``updated`` is."""

    __slots__ = ("_empty",)

    def __init__(self, data: dict[str, Any], empty: Callable[[str], Any]) -> None:
        super().__init__(data)
        self._empty = empty

    def __missing__(self, key: str) -> Any:
        return self._empty(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        return self._empty(key) if default is None else default


def _nothing(key: str) -> Any:
    return {}


def _top(key: str) -> Any:
    if key == "tags":
        return {"added": [], "removed": []}
    if key == "fields":
        return Unchanged({}, _nothing)
    return {}


NO_CHANGES = Unchanged({}, _top)
"""``changed`` as rules read it on an event where nothing changed."""


def readable_changes(changed: dict[str, Any]) -> Unchanged:
    """``changed`` of an event as conditions and templates read it (:class:`Unchanged`)."""
    if not changed:
        return NO_CHANGES
    if isinstance(changed, Unchanged):
        return changed
    fields = changed.get("fields")
    data = dict(changed)
    if isinstance(fields, dict):
        data["fields"] = Unchanged(fields, _nothing)
    return Unchanged(data, _top)


class Conversation(EventPart):
    """A conversation (a chat) as rules see it."""

    id: str | None = None
    external_id: str | None = None
    status: Literal["open", "closed"] | None = None
    group: str | None = None
    assignee: str | None = None
    tags: list[str] = Field(default_factory=list)
    page: str | None = None
    link: str | None = None
    last_client_message_at: datetime | None = None
    """When the client last wrote (kept by rulekit from the conversation's events)."""
    last_agent_reply_at: datetime | None = None
    """When an agent last replied."""
    first_agent_reply_at: datetime | None = None
    """When an agent first replied."""
    last_agent: str | None = None
    """The email of the agent who last answered this client (kept like the reply times;
    ``assign`` with ``strategy: last_agent`` picks them again)."""
    assigned_by: Literal["rule", "agent", "channel"] | None = None
    """Who made the last change of ``assignee`` or ``group``: a rule's ``assign``, an agent
    (from the console) or the channel (someone in the service's own app). A rule's ``assign``
    leaves a person's assignment made after its event as it is (see ``assign``)."""
    assigned_at: datetime | None = None
    """When that change was made (by the clock of the daemon that made it)."""

    _aware = field_validator(
        "last_client_message_at", "last_agent_reply_at", "first_agent_reply_at", "assigned_at"
    )(classmethod(lambda cls, v: _aware(v)))
    priority: Priority | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    """The conversation's own fields (``plan``, ``order_id``...), set by rules or agents."""


class Client(EventPart):
    """The person on the other side. ``name`` is a real name only; ``display_name`` is what the
    provider shows (e.g. "Visitor 4p40" for an anonymous visitor)."""

    id: str | None = None
    name: str | None = None
    display_name: str | None = None
    email: str | None = None
    phone: str | None = None
    notes: str | None = None
    ip: str | None = None
    browser: str | None = None
    os: str | None = None
    language: str | None = None
    browser_language: str | None = None
    country: str | None = None
    country_code: str | None = None
    """ISO 3166-1 alpha-2, derived from ``country`` (a name, as providers send it) unless given."""
    city: str | None = None
    last_visit: datetime | None = None
    custom: dict[str, Any] = Field(default_factory=dict)

    _aware = field_validator("last_visit")(classmethod(lambda cls, v: _aware(v)))

    @model_validator(mode="after")
    def _derive_country_code(self) -> Client:
        if self.country_code is None and self.country:
            self.country_code = country_code(self.country)
        return self

    def _derive_trusted(self) -> None:
        """``country_code`` derived as in validation, for :meth:`StrictModel.trusted`."""
        data = self.__dict__
        if data["country_code"] is None and data["country"]:
            # as validation sets it: through assignment, so the field counts as set
            data["country_code"] = country_code(data["country"])
            self.__pydantic_fields_set__.add("country_code")


class Message(EventPart):
    """The message the event is about, when there is one."""

    id: str | None = None
    text: str | None = None
    author: Literal["client", "agent", "system"] | None = None
    agent: str | None = None
    created_at: datetime | None = None
    kind: Literal["text", "photo", "sticker", "document", "voice", "video", "other"] | None = None
    """What the message holds, where the channel says (a messenger's photo has no text)."""
    edited: bool = False
    """The event is about a change to a message sent before."""
    album: str | None = None
    """The album the message was sent in, where the channel says (a messenger delivers each
    photo or video of an album as a message of its own): its first is the ``message`` event
    (or ``created``, ``reopened``), each other an ``album_part``."""

    _aware = field_validator("created_at")(classmethod(lambda cls, v: _aware(v)))


class Agent(EventPart):
    """The agent who acted, when one did; ``known`` tells whether the directory lists them."""

    id: str | None = None
    email: str | None = None
    name: str | None = None
    known: bool = False


class TriggerEvent(EventPart):
    """What rules read as ``trigger``: the event that set a timer (in rules without ``after:``,
    the event itself) — its fields, without the provider's raw payload."""

    id: str
    channel: str
    event: str
    occurred_at: datetime
    origin: str
    recovered: bool
    conversation: Conversation
    client: Client
    message: Message
    agent: Agent


class Event(StrictModel):
    """A normalized event. ``rulekit.Event`` is this class.

    ``id`` is derived from provider ids so that a redelivery gets the same id; when a normalized
    event file leaves it out, it is derived from the event's content.
    """

    id: str = ""
    channel: str
    event: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    origin: Origin = "channel"
    recovered: bool = False
    conversation: Conversation = Field(default_factory=Conversation)
    client: Client = Field(default_factory=Client)
    message: Message = Field(default_factory=Message)
    agent: Agent = Field(default_factory=Agent)
    changed: dict[str, Any] = Field(default_factory=dict)
    """On an ``updated`` event: what changed, ``{from, to}`` per attribute (``priority``,
    ``assignee``, ``group``), ``{from, to, added, removed}`` for ``tags`` and ``{name: {from,
    to}}`` for ``fields``; empty on other events."""
    raw: Any = None
    _trigger: Event | None = PrivateAttr(default=None)
    _trigger_view: TriggerEvent | None = PrivateAttr(default=None)
    _team: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _forgotten(cls, data: Any) -> Any:
        return _unforgotten(cls, data)

    @property
    def team(self) -> Any:
        """The team as this event's evaluation sees it (:class:`rulekit.team.Team`), which the
        engine gives the event when its rules read ``team``; None before."""
        return self._team

    @property
    def trigger(self) -> TriggerEvent:
        """The event that set the timer this event fires for (see :meth:`at_fire_time`), else
        this event itself."""
        if self._trigger_view is None:
            source = self._trigger or self
            self._trigger_view = TriggerEvent.model_construct(
                **{name: getattr(source, name) for name in TriggerEvent.model_fields}
            )
        return self._trigger_view

    def at_fire_time(self, conversation: Conversation | None, client: Client | None) -> Event:
        """This event as a timer it set sees it when it fires: ``message``, ``event`` and
        ``agent`` are this event's; ``conversation`` and ``client`` are current (given, or
        this event's when unknown); ``trigger`` is this event."""
        fired = self.model_copy(
            update={
                "conversation": conversation or self.conversation,
                "client": client or self.client,
            }
        )
        fired._trigger = self
        fired._trigger_view = None
        return fired

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at_aware(cls, value: datetime) -> datetime:
        return _aware(value)  # type: ignore[return-value]

    @field_validator("conversation", "client", "message", "agent", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    def _derive_trusted(self) -> None:
        """An ``id`` left out derived as in validation, for :meth:`StrictModel.trusted` (with
        which providers build their events from parts they built the same way)."""
        if not self.id:
            self._set_derived_id()

    @model_validator(mode="after")
    def _derive_id(self) -> Event:
        if not self.id:
            self._set_derived_id()
        return self

    def _set_derived_id(self) -> None:
        identity = json.dumps(self._identity(), sort_keys=True).encode()
        self.id = f"{self.channel}:{self.event}:{hashlib.sha256(identity).hexdigest()[:20]}"

    def _identity(self) -> dict[str, Any]:
        """What a derived id digests: the content, where attributes added to the contract later
        count only when set (so an event file keeps its id across versions)."""
        data = self.model_dump(mode="json", exclude={"id", "raw"})
        for later in ("priority", "fields"):
            if not data["conversation"][later]:
                del data["conversation"][later]
        if not data["changed"]:
            del data["changed"]
        return data

    def public(self) -> dict[str, Any]:
        """The event as JSON-ready data, without the raw payload."""
        return self.model_dump(mode="json", exclude={"raw"})
