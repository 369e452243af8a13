"""What the :class:`~rulekit.channels.base.Provider` base class guarantees of every provider.

Whatever a plugin's code does, the events its ``parse`` and ``timer_due`` return and the key
its ``conversation_key`` returns are made fit to store, index and compute with before the
daemon sees them: a channel's ids are its own (``<channel>:`` first, so a sender on one channel
cannot take another's), ids are bounded (:func:`rulekit.channels.body.bounded_key`) and times in
range (:func:`rulekit.channels.body.bounded_time`), and ``conversation_key`` never raises.
``Provider.__init_subclass__`` wraps each subclass's own methods with the wrappers here.

What a provider says of its settings alone (:data:`SETTLED`: its ``service_account``, whether
it ``fetches_updates``, its ``reply_problem`` and ``update_problem``) is asked once per provider
instance, when the snapshot is built (:func:`settle`, in the thread that loads it, within the
reload's budget), and kept: the daemon's event loop, which asks it for calls, fetchers and
the console, then never runs the plugin's code for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rulekit.channels.body import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_KEY_CHARS,
    bounded_key,
    bounded_time,
    for_providers,
)
from rulekit.event import Event
from rulekit.store.base import State

if TYPE_CHECKING:
    from rulekit.channels.base import ChannelTimer, Provider

logger = logging.getLogger("rulekit.channels")

_NOT_YET = object()


def _own_key(key: str, own: str) -> str:
    """``key`` as an id of the channel whose ids start with ``own``: given that prefix when it
    lacks it, and what follows the prefix made fit to store (:func:`bounded_key`: NUL and lone
    surrogates replaced, a long one its digest). A key made so is kept as it is."""
    rest = key[len(own) :] if key.startswith(own) else key
    return own + (bounded_key(rest) or rest)


def bounded_events(events: list[Event], channel: str) -> list[Event]:
    """``events`` (as a provider returned them) made the channel's own and fit to store: each
    event's channel is ``channel``, its id and its conversation's start with ``<channel>:``,
    every id is bounded (:func:`bounded_key`) and every time in range (:func:`bounded_time`).
    Changed in place where the part is the event's own, replaced by a copy where it may be
    shared with the provider's state."""
    own = channel + ":"
    skip = len(own)
    # (the id checks below: a body's events share their conversation or client objects, and
    # one already made fit is not checked again, ``bounded_key`` of a bounded id being that id)
    checked_conversation: object = _NOT_YET
    checked_client: object = _NOT_YET
    for event in events:
        # (the event's fields read from its ``__dict__``: each attribute of a pydantic model is
        # read through its ``__getattr__`` hook, and set through its ``__setattr__``)
        fields = event.__dict__
        # a channel's events and conversations are its own: an id that does not say so is
        # made to (else a sender on one channel could take another's ids, and record first
        # the event another channel's webhook will mean, which then runs no action)
        if fields["channel"] != channel or "channel" not in event.__pydantic_fields_set__:
            event.channel = channel
        # (and what follows the prefix is bounded, the prefix kept: the same id for every event
        # that shares the conversation, whichever sees it first, and an id made so kept as it is)
        key = fields["id"]
        if (
            not (
                key.startswith(own)
                and 0 < len(key) - skip <= MAX_KEY_CHARS
                and key.isascii()
                and "\x00" not in key
            )
            and (made := _own_key(key, own)) != key
        ):
            event.id = made
        conversation = fields["conversation"]
        if conversation is not checked_conversation:
            part_id = conversation.id
            if part_id is None or (
                (
                    part_id.startswith(own)
                    and 0 < len(part_id) - skip <= MAX_KEY_CHARS
                    and part_id.isascii()
                    and "\x00" not in part_id
                )
                or (made := _own_key(part_id, own)) == part_id
            ):
                checked_conversation = conversation
            else:  # a copy: the conversation the provider's state holds is left as it is
                event.conversation = conversation.model_copy(update={"id": made})
        occurred = fields["occurred_at"]
        if (occurred.tzinfo is None or not EARLIEST_TIME <= occurred <= LATEST_TIME) and not (
            EARLIEST_TIME <= _aware(occurred) <= LATEST_TIME
        ):
            event.occurred_at = datetime.now(UTC)
        # (what ``_bound_times`` checks, written out for the usual event: its message's time and
        # the client's last visit aware and in range, or none, and the conversation's none)
        written = fields["message"].created_at
        visit = fields["client"].last_visit
        conversation = fields["conversation"]
        if not (
            (
                written is None
                or (written.tzinfo is not None and EARLIEST_TIME <= written <= LATEST_TIME)
            )
            and (
                visit is None
                or (visit.tzinfo is not None and EARLIEST_TIME <= visit <= LATEST_TIME)
            )
            and conversation.last_client_message_at is None
            and conversation.last_agent_reply_at is None
            and conversation.first_agent_reply_at is None
        ):
            _bound_times(event)
        # the usual id of the other parts (ASCII without NUL, not too long) is kept as it is:
        # checked in line, each part written out
        client = fields["client"]
        if client is not checked_client:
            checked_client = client
            part_id = client.id
            if part_id is not None and not (
                0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
            ):
                client.id = bounded_key(part_id)
        message = fields["message"]
        part_id = message.id
        if part_id is not None and not (
            0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
        ):
            message.id = bounded_key(part_id)
        agent = fields["agent"]
        part_id = agent.id
        if part_id is not None and not (
            0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
        ):
            agent.id = bounded_key(part_id)
    return events


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_TIMES = (
    ("message", ("created_at",)),
    ("client", ("last_visit",)),
    ("conversation", ("last_client_message_at", "last_agent_reply_at", "first_agent_reply_at")),
)


def _bound_times(event: Event) -> None:
    """The event's times from outside, each None when :func:`bounded_time` says it is unknown
    (the part is replaced, never changed: it may be shared with the state)."""
    for part_name, names in _TIMES:
        part = getattr(event, part_name)
        had = part.__dict__
        wrong = {
            name: None
            for name in names
            if had[name] is not None and bounded_time(had[name]) is None
        }
        if wrong:
            setattr(event, part_name, part.model_copy(update=wrong))


def parses_clean(parse: Callable[..., list[Event]]) -> Callable[..., list[Event]]:
    """A provider's ``parse``, handed the body as :func:`for_providers` makes it and returning
    its events through :func:`bounded_events`, each of origin ``channel``."""

    @functools.wraps(parse)
    def wrapper(self: Provider, body: bytes, state: State) -> list[Event]:
        events = bounded_events(parse(self, for_providers(body), state), self.channel)
        for event in events:
            # what a body says comes from outside, whatever it claims: an event of origin
            # ``console`` is an agent's in the console (rules and the audit trail trust that),
            # one of origin ``rulekit`` is rulekit's own (loop protection passes over it)
            if event.__dict__["origin"] != "channel":
                event.origin = "channel"
        return events

    return wrapper


def timer_events_clean(timer_due: Callable[..., list[Event]]) -> Callable[..., list[Event]]:
    """A provider's ``timer_due``, returning its events through :func:`bounded_events`."""

    @functools.wraps(timer_due)
    def wrapper(self: Provider, timer: ChannelTimer, state: State) -> list[Event]:
        return bounded_events(timer_due(self, timer, state), self.channel)

    return wrapper


SETTLED = ("service_account", "fetches_updates", "reply_problem", "update_problem")
"""The provider's members that depend on its settings alone, asked once (:func:`settled`)."""


def settled(method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A provider's method (or property getter) of no argument, its answer kept on the
    instance once given (an exception is raised again, each time, as it was)."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Provider) -> Any:
        kept = self.__dict__.setdefault("_rulekit_settled", {})
        if name not in kept:
            kept[name] = method(self)
        return kept[name]

    return wrapper


def settle(provider: Provider) -> None:
    """Ask ``provider`` what it says of its settings (:data:`SETTLED`) now, so that it is
    kept; a plugin's bug here is left for the caller that asks again."""
    for name in SETTLED:
        try:
            member = getattr(provider, name)  # (the property is asked by its reading)
            if name != "service_account":
                member()
        except Exception:  # (raised again, and handled, where the daemon asks)
            continue


def keys_safely(conversation_key: Callable[..., str | None]) -> Callable[..., str | None]:
    """A provider's ``conversation_key``, its key bounded (:func:`bounded_key`) and an
    exception from it logged and taken as "cannot tell" (None)."""

    @functools.wraps(conversation_key)
    def wrapper(self: Provider, data: Any) -> str | None:
        try:
            key = conversation_key(self, data)
        except Exception:  # the contract says it must not raise; a plugin's bug costs no webhook
            logger.warning("provider %s: conversation_key failed", self.name, exc_info=True)
            return None
        return bounded_key(key)

    return wrapper
