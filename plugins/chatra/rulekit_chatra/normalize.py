"""From one read webhook to rulekit's normalized events, using and updating conversation state.

Chatra says what happened in the chat (a chat started, new messages, the chat's transcript);
rulekit's events say what it means for the conversation. The difference is state, kept through
the store interface and keyed by Chatra's client id (the id replies need):

* a message id already seen yields nothing, so redeliveries and transcripts that repeat earlier
  fragments do not fire rules twice; a message first seen in a transcript (its fragment was lost)
  yields its event with ``recovered: True``, before the transcript's ``closed``;
* the first message of a never-seen visitor is ``created``, whoever wrote it and whichever
  webhook carried it; a client's message in a closed conversation is ``reopened`` (an agent
  writing into a closed conversation opens it again too, as ``agent_replied``);
* rulekit's own replies come back tagged with ``received_from`` and yield nothing;
* a known client's name, email or phone that became known or changed yields ``client_updated``,
  before the payload's messages, so their rules see the new data.

Event ids derive from Chatra's ids (``<channel>:msg:<message id>``,
``<channel>:closed:<chat id>:<last message id>``), so a redelivery gets the same id.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rulekit.countries import country_code
from rulekit.directory import Directory
from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.models import trusted_instance, whole_builder
from rulekit.store.base import State

from .payload import ChatraAgent, ChatraClient, ChatraMessage, Payload
from .settings import CLIENT_FIELDS, ChatraSettings

_MISSING = object()
_ID = operator.attrgetter("id")
_AUTHORS = ("client", "agent")
"""Message types that have events (any other is a system message)."""

CONTACT_FIELDS: tuple[str, ...] = ("name", "email", "phone")
"""Client fields whose change is a ``client_updated`` event."""


@dataclass(frozen=True)
class Normalizer:
    """Derives a channel's events from Chatra payloads."""

    channel: str
    settings: ChatraSettings
    directory: Directory

    def events(self, payload: Payload, state: State) -> list[Event]:
        """The events one payload means, in order; updates ``state`` to match."""
        channel = self.channel
        key = payload.client.id
        known_conversation, known_client = state.get_conversation_and_client(channel, key)
        client = self.client(payload.client, known_client)
        # Conversation objects are never changed once made (a change makes a copy), so each
        # event keeps the conversation as it was at that point.
        conversation = None
        if known_conversation is not None:
            conversation = _refreshed(known_conversation, payload)
        raw = payload.raw
        events: list[Event] = []
        emit = events.append

        if conversation is not None and known_client is not None and client is not known_client:
            changed = {f: getattr(client, f) for f in CONTACT_FIELDS}
            before = {f: getattr(known_client, f) for f in CONTACT_FIELDS}
            if changed != before:
                # from what to what, and the webhook's first message: a change back to what
                # the client had before is a change too (an event id already recorded would
                # be dropped as a repeat), and the same webhook again makes the same id
                first = payload.messages[0].id if payload.messages else ""
                parts = [*map(str, before.values()), *map(str, changed.values()), first]
                emit(
                    _event(
                        channel,
                        client,
                        raw,
                        "client_updated",
                        f"client:{key}:{_digest(parts)}",
                        conversation,
                        _first_time(payload.messages),
                    )
                )

        messages = payload.messages
        transcript = payload.event_name == "chatTranscript"
        # Every message id is marked seen (our own reply's echo too, in case the transcript's
        # copy lacks the tag), and a transcript's close: in one call, in that order.
        marks = list(map(_ID, messages))
        if transcript:
            chat = payload.client.chat_id or key
            last = messages[-1].id if messages else "none"
            closing = f"closed:{chat}:{last}"
            marks.append(closing)
        fresh = state.mark_messages_seen(channel, marks) if marks else []
        ours = self.settings.received_from
        for message, new in zip(messages, fresh, strict=False):
            author = message.type
            if not new or message.received_from == ours or author not in _AUTHORS:
                continue  # seen, our own reply's echo, or a system message (no event for it)
            if conversation is None:
                conversation = self._new_conversation(payload)
                name = "created"
            elif author == "client":
                name = "reopened" if conversation.status == "closed" else "message"
            else:
                name = "agent_replied"
            if conversation.status != "open":
                conversation = conversation.replaced(status="open")
            if author == "agent":
                agent = _author(message, payload.agents, self.directory)
            else:
                agent = _build_agent(
                    {"id": None, "email": None, "name": None, "known": False}, _NOTHING_GIVEN
                )
            created_at = message.created_at
            # (``_event`` written out: this runs for every message's event)
            emit(
                _build_event(
                    {
                        "id": f"{channel}:msg:{message.id}",
                        "channel": channel,
                        "event": name,
                        "occurred_at": created_at or datetime.now(UTC),
                        "origin": "channel",
                        "recovered": transcript,
                        "conversation": conversation,
                        "client": client,
                        "message": _build_message(
                            {
                                "id": message.id,
                                "text": message.text,
                                "author": author,
                                "agent": agent.__dict__["email"],
                                "created_at": created_at,
                                "kind": None,
                                "edited": False,
                            },
                            _MESSAGE_GIVEN,
                        ),
                        "agent": agent,
                        "changed": {},
                        "raw": raw,
                    },
                    _EVENT_GIVEN,
                )
            )

        # The mark makes a redelivered (or late) transcript close nothing a second time.
        if transcript and fresh[-1]:
            conversation = _with_status(conversation or self._new_conversation(payload), "closed")
            emit(
                _event(channel, client, raw, "closed", closing, conversation, _last_time(messages))
            )

        if conversation is not None:
            if conversation is not known_conversation:
                state.save_conversation(channel, key, conversation)
            if client is not known_client:
                state.save_client(channel, client)
        return events

    def client(self, data: ChatraClient, known: Client | None) -> Client:
        """The client record: what Chatra sent now, over what was known, for the configured
        ``client_data`` fields only. A field Chatra left out keeps its known value; an
        unchanged record is ``known`` itself."""
        if known is None:
            if self._takes_every_field:  # (the usual settings, for a new visitor: written out)
                return _build_client(
                    {
                        "id": data.id,
                        "name": data.name,
                        "display_name": data.display_name,
                        "email": data.email,
                        "phone": data.phone,
                        "notes": data.notes,
                        "ip": data.ip,
                        "browser": data.browser,
                        "os": data.os,
                        "language": data.language,
                        "browser_language": data.browser_language,
                        "country": data.country,
                        "country_code": None,  # derived from ``country`` by the build
                        "city": data.city,
                        "last_visit": data.last_visit,
                        "custom": data.custom,
                    },
                    _EVERY_CLIENT_FIELD_GIVEN,
                )
        elif self._unchanged(data, known):
            return known
        elif self._takes_every_field:  # (the usual settings: written out, as for a new one)
            had = known.__dict__
            client = _build_client(
                {
                    "id": data.id,
                    "name": had["name"] if data.name is None else data.name,
                    "display_name": data.display_name or had["display_name"],
                    "email": had["email"] if data.email is None else data.email,
                    "phone": had["phone"] if data.phone is None else data.phone,
                    "notes": had["notes"] if data.notes is None else data.notes,
                    "ip": had["ip"] if data.ip is None else data.ip,
                    "browser": had["browser"] if data.browser is None else data.browser,
                    "os": had["os"] if data.os is None else data.os,
                    "language": had["language"] if data.language is None else data.language,
                    "browser_language": had["browser_language"]
                    if data.browser_language is None
                    else data.browser_language,
                    "country": had["country"] if data.country is None else data.country,
                    "country_code": None,  # derived from ``country`` by the build
                    "city": had["city"] if data.city is None else data.city,
                    "last_visit": had["last_visit"] if data.last_visit is None else data.last_visit,
                    "custom": {**had["custom"], **data.custom},
                },
                _EVERY_CLIENT_FIELD_GIVEN,
            )
            return known if had == client.__dict__ else client
        names, sent_of, _ = self._compared
        sent = sent_of(data)
        custom = self._client_data[1]
        if known is None:
            values = dict(zip(names, sent, strict=True))
            if custom:
                values["custom"] = data.custom
            values["display_name"] = data.display_name
        else:
            had = known.__dict__
            values = {
                name: had[name] if value is None else value
                for name, value in zip(names, sent, strict=True)
            }
            if custom:
                values["custom"] = {**known.custom, **data.custom}
            values["display_name"] = data.display_name or known.display_name
        client = trusted_instance(Client, values)  # derives country_code from country
        if known is not None and had == client.__dict__:
            return known
        return client

    def _unchanged(self, data: ChatraClient, known: Client) -> bool:
        """Whether :meth:`client` would make ``known`` again (most webhooks of a chat): checked
        without making a record."""
        had = known.__dict__
        if (data.display_name or had["display_name"]) != had["display_name"]:
            return False
        if self._takes_every_field:  # (the usual settings: each field compared, written out)
            if not (
                data.id == had["id"]
                and (data.name is None or data.name == had["name"])
                and (data.email is None or data.email == had["email"])
                and (data.phone is None or data.phone == had["phone"])
                and (data.notes is None or data.notes == had["notes"])
                and (data.ip is None or data.ip == had["ip"])
                and (data.browser is None or data.browser == had["browser"])
                and (data.os is None or data.os == had["os"])
                and (data.language is None or data.language == had["language"])
                and (
                    data.browser_language is None
                    or data.browser_language == had["browser_language"]
                )
                and (data.country is None or data.country == had["country"])
                and (data.city is None or data.city == had["city"])
                and (data.last_visit is None or data.last_visit == had["last_visit"])
            ):
                return False
        else:
            _, sent_of, held_of = self._compared
            sent = sent_of(data)
            held = held_of(had)
            if sent != held:  # (else all the same, compared at once; a webhook leaving some out)
                for value, old in zip(sent, held, strict=True):  # (in ``_compared``'s order)
                    if value is not None and value != old:
                        return False
        if self._other_fields and any(had[name] is not None for name in self._other_fields):
            return False  # fields not taken (any longer) are dropped
        if had["country_code"] != (country_code(had["country"]) if had["country"] else None):
            return False
        known_custom = had["custom"]
        if not self._client_data[1]:
            return not known_custom
        sent_custom = data.custom
        # every key sent, with its value (usually none)
        return not sent_custom or sent_custom.items() <= known_custom.items()

    @functools.cached_property
    def _takes_every_field(self) -> bool:
        """Whether ``client_data`` takes every field Chatra can supply (the default)."""
        return set(self.settings.client_data) >= set(CLIENT_FIELDS)

    @functools.cached_property
    def _other_fields(self) -> tuple[str, ...]:
        """Client fields :meth:`client` leaves unset (``country_code`` is derived)."""
        taken = {*self._client_data[0], "id", "display_name", "custom", "country_code"}
        return tuple(name for name in Client.model_fields if name not in taken)

    @functools.cached_property
    def _compared(self) -> tuple[tuple[str, ...], Callable[[Any], Any], Callable[[Any], Any]]:
        """``id`` and the ``client_data`` fields, with what gets their values, as a tuple, from
        a read client and from a record's ``__dict__``."""
        names = ("id", *self._client_data[0])
        if len(names) == 1:  # (the getters give a value, not a tuple, for one name)
            return names, lambda data: (data.id,), lambda had: (had["id"],)
        return names, operator.attrgetter(*names), operator.itemgetter(*names)

    @functools.cached_property
    def _client_data(self) -> tuple[tuple[str, ...], bool]:
        """The ``client_data`` fields, ``custom`` apart (merged, not replaced)."""
        wanted = self.settings.client_data
        return tuple(name for name in wanted if name != "custom"), "custom" in wanted

    def _new_conversation(self, payload: Payload) -> Conversation:
        client = payload.client
        return _build_conversation(
            {
                "id": f"{self.channel}:{client.id}",
                "external_id": client.chat_id,
                "status": "open",
                "group": self.settings.default_group,
                "assignee": None,
                "tags": [],
                "page": payload.page,
                "link": client.chat_link,
                "last_client_message_at": None,
                "last_agent_reply_at": None,
                "first_agent_reply_at": None,
                "last_agent": None,
                "priority": None,
                "fields": {},
            },
            _CONVERSATION_GIVEN,
        )


def _event(
    channel: str,
    client: Client,
    raw: Any,
    name: str,
    event_id: str,
    conversation: Conversation,
    occurred_at: datetime | None,
    recovered: bool = False,
    message: Message | None = None,
    agent: Agent | None = None,
) -> Event:
    """One of a payload's events. Every part was built here from the read payload: nothing to
    validate again (and the id is given, so ``Event`` would derive nothing). Written out whole:
    this runs for every event, and its fields are the ones validation would be given
    (``_EVENT_GIVEN``)."""
    return _build_event(
        {
            "id": f"{channel}:{event_id}",
            "channel": channel,
            "event": name,
            "occurred_at": occurred_at or datetime.now(UTC),
            "origin": "channel",
            "recovered": recovered,
            "conversation": conversation,
            "client": client,
            "message": _no_message() if message is None else message,
            "agent": _no_agent() if agent is None else agent,
            "changed": {},
            "raw": raw,
        },
        _EVENT_GIVEN,
    )


_EVENT_GIVEN = frozenset(Event.model_fields.keys() - {"origin", "changed"})
_CONVERSATION_GIVEN = frozenset(("id", "external_id", "status", "group", "page", "link"))
_MESSAGE_GIVEN = frozenset(("id", "text", "author", "agent", "created_at"))
_AGENT_GIVEN = frozenset(("id", "email", "name", "known"))
_NOTHING_GIVEN: frozenset[str] = frozenset()
# (each model's trusted build, called directly: several per webhook; an event is always given
# its id, so it has nothing to derive)
_build_event = whole_builder(Event, derives=False)
_build_message = whole_builder(Message)
_build_agent = whole_builder(Agent)
_build_conversation = whole_builder(Conversation)
_build_client = whole_builder(Client)
_EVERY_CLIENT_FIELD_GIVEN = frozenset(Client.model_fields.keys() - {"country_code"})


def _no_agent() -> Agent:
    """``Agent()``: the event has no agent."""
    return _build_agent({"id": None, "email": None, "name": None, "known": False}, _NOTHING_GIVEN)


def _no_message() -> Message:
    """``Message()``: the event has no message."""
    return _build_message(
        {
            "id": None,
            "text": None,
            "author": None,
            "agent": None,
            "created_at": None,
            "kind": None,
            "edited": False,
        },
        _NOTHING_GIVEN,
    )


def _author(message: ChatraMessage, agents: Sequence[ChatraAgent], directory: Directory) -> Agent:
    """Who wrote an agent message: Chatra's agent (by ``agentId``) matched to the directory."""
    agent_id = message.agent_id
    chatra = None
    if agent_id:
        for candidate in reversed(agents):  # (of several with this id, the last)
            if candidate.id == agent_id:
                chatra = candidate
                break
    elif len(agents) == 1:
        chatra = agents[0]  # the only agent in the chat wrote it
    email = chatra.email if chatra else None
    entry = directory.get(email)
    return _build_agent(
        {
            "id": agent_id or (chatra.id if chatra else None),
            "email": entry.email if entry else email,
            "name": (entry.name if entry else None)
            or (chatra.name if chatra else None)
            or message.agent_name,
            "known": entry is not None,
        },
        _AGENT_GIVEN,
    )


def _refreshed(conversation: Conversation, payload: Payload) -> Conversation:
    """The conversation with the chat's id, link and start page from the payload, when sent."""
    client, had = payload.client, conversation.__dict__
    changes = {}
    if client.chat_id is not None and client.chat_id != had["external_id"]:
        changes["external_id"] = client.chat_id
    if client.chat_link is not None and client.chat_link != had["link"]:
        changes["link"] = client.chat_link
    if payload.page is not None and payload.page != had["page"]:
        changes["page"] = payload.page
    return conversation.replaced(**changes) if changes else conversation


def _with_status(conversation: Conversation, status: str) -> Conversation:
    if conversation.status == status:
        return conversation
    return conversation.replaced(status=status)


def _first_time(messages: Iterable[ChatraMessage]) -> datetime | None:
    return next((m.created_at for m in messages if m.created_at is not None), None)


def _last_time(messages: Iterable[ChatraMessage]) -> datetime | None:
    # Chatra does not say when a chat ended; its last message is the best stable stand-in.
    times = [m.created_at for m in messages if m.created_at is not None]
    return max(times) if times else None


def _digest(parts: Iterable[str]) -> str:
    joined = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:16]
