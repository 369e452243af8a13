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
  before the payload's messages, so their rules see the new data;
* an agent of the directory (with access to the channel) who answers in Chatra a conversation
  nobody is assigned to takes it: its ``assignee``, with ``assigned_by: channel``.

Event ids derive from Chatra's ids (``<channel>:msg:<message id>``,
``<channel>:closed:<chat id>:<last message id>``), so a redelivery gets the same id.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rulekit.actions.update_client import pending_changes
from rulekit.directory import Directory
from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.models import whole_builder
from rulekit.store.base import State

from .clients import ClientRecords
from .payload import CONTACT_KEYS, FETCHED, FETCHED_AT, ChatraAgent, ChatraMessage, Payload
from .settings import ChatraSettings

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
        row = key  # the key the conversation is stored under
        if known_conversation is None:
            # a conversation a state-changing job (tag, set, assign) stored first, under its
            # id (an event given to rulekit already normalized, as `rulekit test` takes them):
            # kept where it is, so that the conversation stays one row and its state one
            found = state.find_conversation(channel, f"{channel}:{key}")
            if found is not None:
                row, known_conversation = found
        if (
            payload.event_name == FETCHED
            and known_client is None
            and known_conversation is not None
        ):
            # the webhook that asked for it recorded the client with their conversation, and
            # the client alone is gone since: rulekit forget erased them while the fetch
            # waited in the queue. Chatra's answer does not record them again
            return []
        client = self.clients.record(payload.client, known_client)
        if known_conversation is not None and known_client is not None:
            if client is not known_client and known_conversation.id:
                client = self._unsent_kept(client, known_client, known_conversation.id, state)
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
                # from what to what, and the webhook's messages (a fetched body's fetch
                # time): a change back to what the client had before is a change too (an
                # event id already recorded would be dropped as a repeat), and the same
                # webhook again makes the same id. All its messages, not the first: each
                # transcript of a chat Chatra reopened begins with the chat's first message
                said = [m.id for m in payload.messages] or [_fetched_at(payload)]
                parts = [*map(str, before.values()), *map(str, changed.values()), *said]
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
        agents: _Agents | None = None
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
                if agents is None:  # (once per body: its agents by id)
                    agents = _Agents(payload.agents)
                agent = _author(message, agents, self.directory)
                if conversation.assignee is None:
                    conversation = self._taken(conversation, agent, message.created_at)
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
                                "kind": message.kind,
                                "edited": False,
                                "album": None,
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
                state.save_conversation(channel, row, conversation)
            if client is not known_client:
                state.save_client(channel, client)
        return events

    def _taken(self, conversation: Conversation, agent: Agent, at: datetime | None) -> Conversation:
        """An agent of the directory with access to the channel who answers in Chatra a
        conversation nobody is assigned to takes it (``assigned_by: channel``): a rule's
        ``assign`` of an event before it then leaves it with them."""
        entry = self.directory.get(agent.email) if agent.known else None
        if entry is None or self.channel not in entry.channels:
            return conversation
        return conversation.replaced(
            assignee=entry.email, assigned_by="channel", assigned_at=at or datetime.now(UTC)
        )

    def _unsent_kept(
        self, client: Client, known: Client, conversation_id: str, state: State
    ) -> Client:
        """``client`` as the webhook has it, but for the values rulekit set that Chatra does
        not know yet (an agent's change of the client's data, or a rule's, still to be sent):
        until it is, Chatra's webhooks carry the old value, which is no change of the
        client's. Asked only when a contact field differs."""
        had, now = known.__dict__, client.__dict__
        differs = [name for name in CONTACT_KEYS if now[name] != had[name]]
        if not differs:
            return client
        pending = pending_changes(state, self.channel, conversation_id)
        kept = {
            name: had[name] for name in differs if name in pending and pending[name] == had[name]
        }
        if not kept:
            return client
        client = client.model_copy(update=kept)
        return known if client.__dict__ == had else client

    @functools.cached_property
    def clients(self) -> ClientRecords:
        """The client records of this channel's events (its ``client_data`` setting)."""
        return ClientRecords(self.settings)

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
                "assigned_by": None,
                "assigned_at": None,
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
_MESSAGE_GIVEN = frozenset(("id", "text", "author", "agent", "created_at", "kind"))
_AGENT_GIVEN = frozenset(("id", "email", "name", "known"))
_NOTHING_GIVEN: frozenset[str] = frozenset()
# (each model's trusted build, called directly: several per webhook; an event is always given
# its id, so it has nothing to derive)
_build_event = whole_builder(Event, derives=False)
_build_message = whole_builder(Message)
_build_agent = whole_builder(Agent)
_build_conversation = whole_builder(Conversation)


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
            "album": None,
        },
        _NOTHING_GIVEN,
    )


class _Agents:
    """A body's ``agents``, found by id: each agent message looked its author up by reading
    the list, and a body of many agents and many messages took minutes of the daemon's time."""

    __slots__ = ("by_id", "only")

    def __init__(self, agents: Sequence[ChatraAgent]) -> None:
        # (of several with an id, the last)
        self.by_id = {agent.id: agent for agent in agents if agent.id}
        self.only = agents[0] if len(agents) == 1 else None


def _author(message: ChatraMessage, agents: _Agents, directory: Directory) -> Agent:
    """Who wrote an agent message: Chatra's agent (by ``agentId``) matched to the directory."""
    agent_id = message.agent_id
    # without an id: the only agent in the chat wrote it
    chatra = agents.by_id.get(agent_id) if agent_id else agents.only
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


def _fetched_at(payload: Payload) -> str:
    """When a fetched body was fetched (``""`` for a webhook, or a body from before it said)."""
    raw = payload.raw
    fetched = payload.event_name == FETCHED and isinstance(raw, dict)
    stamp = raw.get(FETCHED_AT) if fetched else None
    return f"fetched:{stamp}" if isinstance(stamp, str) else ""


def _digest(parts: Iterable[str]) -> str:
    joined = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:16]
