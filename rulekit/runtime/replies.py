"""The reply times of a conversation (``last_client_message_at``, ``last_agent_reply_at``,
``first_agent_reply_at``) and who answered last (``last_agent``), kept from its events so that
a timed rule can ask, when its timer fires, whether an agent answered meanwhile (and ``assign``
can pick the same agent again); and who made its assignment (``assigned_by``, ``assigned_at``),
which the event's ``assign`` compares with the store's when it runs.

The times are stored with the conversation (under the provider's key; under the conversation's
id for a conversation no provider stored, e.g. normalized events in ``rulekit test``) and set
on each event's ``conversation`` before it is evaluated. Webhooks may come out of order: a
message written before the last one known moves no "last" time (nor ``last_agent``) back, and
the first reply is the earliest, whenever it is read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rulekit.event import Conversation, Event
from rulekit.store.base import State
from rulekit.store.state import first_key

REPLY_FIELDS = (
    "last_client_message_at",
    "last_agent_reply_at",
    "first_agent_reply_at",
    "last_agent",
)

ASSIGNMENT_FIELDS = ("assigned_by", "assigned_at")
"""Who made the conversation's assignment and when, as the store keeps them: set on each event's
conversation (see :func:`note_replies`)."""

CLIENT_WRITES = frozenset({"message", "created", "reopened", "album_part"})
"""Events whose message, when its author is the client, is the client writing."""


def note_replies(state: State, event: Event) -> None:
    """Update the stored reply times with ``event`` and set them on its conversation."""
    conversation = event.conversation
    # the channel's events and the agents' own from the console (a reply there is an answer
    # too); never rulekit's own (an autoreply is nobody answering)
    if not conversation.id or event.origin not in ("channel", "console"):
        return
    found = state.find_conversation(event.channel, conversation.id)
    key, stored = (
        found if found is not None else (first_key(event.channel, conversation.id), conversation)
    )
    times: dict[str, Any] = {
        name: getattr(conversation, name) or getattr(stored, name) for name in REPLY_FIELDS
    }
    at = event.occurred_at
    # a chat started or reopened by the client's message is the client writing too
    author = event.message.author if event.event in CLIENT_WRITES else None
    # (webhooks may come out of order: a message written before the last one known, read
    # after it, moves no "last" time back, and an earlier reply is the first)
    if author == "client":
        if not _before(at, times["last_client_message_at"]):
            times["last_client_message_at"] = at
    elif author == "agent" or event.event == "agent_replied":
        if not _before(at, times["last_agent_reply_at"]):
            times["last_agent_reply_at"] = at
            times["last_agent"] = event.agent.email or event.message.agent or times["last_agent"]
        first = times["first_agent_reply_at"]
        if first is None or _before(at, first):
            times["first_agent_reply_at"] = at
    changed = {name: value for name, value in times.items() if getattr(stored, name) != value}
    for name, value in times.items():
        setattr(conversation, name, value)
    if found is not None and _unmarked(conversation) and stored.assigned_by != "channel":
        # who made the assignment the event comes after, as rulekit keeps it, for the event of
        # a provider that keeps no state (the ``webhook`` one): an ``assign`` of the event's
        # rules leaves a person's later one as it is. A provider that keeps state gave its
        # events their conversation's as it was at each (a take by someone in the channel's
        # app, stored by a later message of the same body, is not what an earlier one came
        # after)
        for name in ASSIGNMENT_FIELDS:
            setattr(conversation, name, getattr(stored, name))
    if changed or found is None:
        state.save_conversation(event.channel, key, stored.model_copy(update=times))


def _before(at: datetime, known: datetime | None) -> bool:
    """Whether ``at`` is earlier than ``known`` (a naive time is UTC)."""
    return known is not None and _aware(at) < _aware(known)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _unmarked(conversation: Conversation) -> bool:
    return conversation.assigned_by is None and conversation.assigned_at is None
