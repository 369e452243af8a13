"""State read and written in batches: what to look up, what was found, what to save.

A provider's normalization of one webhook reads a conversation, a client and a message id or
two, one statement each. A round of webhooks asks for all of them at once instead
(:meth:`State.read_many <rulekit.store.base.State.read_many>`, one query on a database server),
and its writes are saved together (:meth:`State.write_many
<rulekit.store.base.State.write_many>`, one statement): see :mod:`rulekit.store.cached`.

Conversations and clients travel as their JSON, as the stores keep them: the state in front of
the store (:class:`~rulekit.store.cached.CachedState`) keeps them so too, and decodes one only
when it is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from rulekit.event import Conversation

Key = tuple[str, str]
"""A channel and a name in it: a conversation's provider key or id, a client id, a message
id."""


@dataclass
class Lookups:
    """What to read."""

    conversations: set[Key] = field(default_factory=set)
    """By the provider's key (:meth:`~rulekit.store.base.State.get_conversation`)."""
    conversation_ids: set[Key] = field(default_factory=set)
    """By rulekit's id (:meth:`~rulekit.store.base.State.find_conversation`)."""
    clients: set[Key] = field(default_factory=set)
    messages: set[Key] = field(default_factory=set)
    """Whether these message ids were seen."""

    def __bool__(self) -> bool:
        return bool(self.conversations or self.conversation_ids or self.clients or self.messages)

    def update(self, other: Lookups) -> None:
        """Add what ``other`` names."""
        self.conversations |= other.conversations
        self.conversation_ids |= other.conversation_ids
        self.clients |= other.clients
        self.messages |= other.messages


@dataclass
class Found:
    """What was read: every key looked up is there, with ``None`` (or ``False``) when absent."""

    conversations: dict[Key, tuple[str | None, str] | None] = field(default_factory=dict)
    """(channel, key) -> the conversation's id and JSON."""
    conversation_ids: dict[Key, tuple[str, str] | None] = field(default_factory=dict)
    """(channel, id) -> the provider's key and the conversation's JSON."""
    clients: dict[Key, str | None] = field(default_factory=dict)
    messages: dict[Key, bool] = field(default_factory=dict)


class SavedConversation(NamedTuple):
    """A conversation to save: the columns besides its JSON are read from the model once."""

    id: str | None
    status: str | None
    assignee: str | None
    """Lower-cased."""
    data: str


def saved_conversation(conversation: Conversation) -> SavedConversation:
    """A conversation as it is saved: its JSON, and the columns read from it."""
    assignee = conversation.assignee.lower() if conversation.assignee else None
    return SavedConversation(
        conversation.id, conversation.status, assignee, conversation.model_dump_json()
    )


@dataclass
class Saves:
    """What to write: conversations and clients (their JSON) and message ids to mark seen."""

    conversations: dict[Key, SavedConversation] = field(default_factory=dict)
    """(channel, key) -> the conversation."""
    clients: dict[Key, str] = field(default_factory=dict)
    """(channel, client id) -> the client's JSON."""
    messages: set[Key] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.conversations or self.clients or self.messages)
