"""The conversation state one transaction reads and changes: :class:`State`.

Providers derive events from it (is this chat closed? was this message seen?), the engine reads
cooldown marks from it, and ``assign`` keeps its round-robin positions and reads who is online
in it. Plugins import it as :class:`rulekit.store.base.State`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rulekit.event import Client, Conversation
from rulekit.store.listing import ConversationQuery, ConversationSummary
from rulekit.store.lookups import Found, Key, Lookups, Saves


def first_key(channel: str, conversation_id: str) -> str:
    """The key rulekit stores a conversation under when it finds none to change (``tag``,
    ``set`` or ``assign`` of an event given already normalized, as ``rulekit test`` takes
    them; the reply times of an event): what follows ``<channel>:`` in its id. Providers key
    their conversations by their own key and give them the id ``<channel>:<key>`` (Chatra's
    client id, Telegram's chat id), so the provider's next webhook continues that conversation,
    with its state, instead of starting a second one under its key."""
    own = channel + ":"
    if conversation_id.startswith(own) and len(conversation_id) > len(own):
        return conversation_id[len(own) :]
    return conversation_id


def free_places(size: int, free: Sequence[int]) -> set[int]:
    """``free`` as a set, refused unless it names at least one of ``size`` places."""
    wanted = set(free)
    if not wanted or min(wanted) < 0 or max(wanted) >= size:
        raise ValueError(f"free places {sorted(wanted)} are not some of 0..{size - 1}")
    return wanted


class State(abc.ABC):
    """What one transaction can read and change."""

    batches = False
    """Whether reading and writing several things at once (:meth:`read_many`,
    :meth:`write_many`) saves work: each statement is a round trip to a database server."""

    # conversations ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        """The conversation a provider keys by ``key`` (e.g. Chatra's client id), if known."""

    @abc.abstractmethod
    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        """Create or replace the conversation stored under ``key``."""

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        """The provider's key and the conversation whose rulekit ``id`` is ``conversation_id``.

        Actions know a conversation by its id (the event's ``conversation.id``), providers by
        their own key; this is the bridge (``assign`` reads, changes and saves back under the
        key). Durable stores should index conversations by id to answer it quickly.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot find conversations by id")

    @abc.abstractmethod
    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        """How many open conversations each assignee (lower-cased email) has."""

    # clients ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_client(self, channel: str, client_id: str) -> Client | None:
        """The last known record of a client."""

    @abc.abstractmethod
    def save_client(self, channel: str, client: Client) -> None:
        """Create or replace a client record (keyed by ``client.id``)."""

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        """:meth:`get_conversation` of ``key`` and :meth:`get_client` of the client whose id is
        ``key``, in one call (one statement in the SQL stores): for providers that key a
        conversation by its client's id, and read both for every webhook."""
        return self.get_conversation(channel, key), self.get_client(channel, key)

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        """Conversations as ``query`` selects them, newest activity first (see
        :mod:`rulekit.store.listing`); at most ``query.limit``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list conversations")

    # messages --------------------------------------------------------------------------------
    @abc.abstractmethod
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        """Record a message id; return True when it had not been seen before."""

    @abc.abstractmethod
    def message_seen(self, channel: str, message_id: str) -> bool:
        """Whether a message id was recorded."""

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        """:meth:`mark_message_seen` of each id in order, in one call (one statement in the SQL
        stores): for each, whether it had not been seen before (an id given twice is new the
        first time at most)."""
        return [self.mark_message_seen(channel, message_id) for message_id in message_ids]

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        """Which of ``message_ids`` were recorded (:meth:`message_seen` of each, in one call)."""
        return {message_id for message_id in message_ids if self.message_seen(channel, message_id)}

    # in batches ------------------------------------------------------------------------------
    def read_many(self, wanted: Lookups, *, hold: bool = False) -> Found:
        """Conversations (by key and by id), clients and message marks, several at once (see
        :mod:`rulekit.store.lookups`). Stores on a server answer it in one query.

        ``hold``: the conversations and clients found are held until the transaction ends, for
        a transaction that writes back what it read: no other transaction changes them in
        between (which would be lost), and one that had changed them before is waited for and
        read as it committed. A store that runs one writing transaction at a time (SQLite, the
        memory store) has nothing to do."""
        found = Found()
        for channel, key in wanted.conversations:
            conversation = self.get_conversation(channel, key)
            found.conversations[channel, key] = (
                (conversation.id, conversation.model_dump_json())
                if conversation is not None
                else None
            )
        for channel, conversation_id in wanted.conversation_ids:
            by_id = self.find_conversation(channel, conversation_id)
            found.conversation_ids[channel, conversation_id] = (
                (by_id[0], by_id[1].model_dump_json()) if by_id is not None else None
            )
        for channel, client_id in wanted.clients:
            client = self.get_client(channel, client_id)
            found.clients[channel, client_id] = (
                client.model_dump_json() if client is not None else None
            )
        for channel, message_id in wanted.messages:
            found.messages[channel, message_id] = self.message_seen(channel, message_id)
        return found

    def write_many(self, saves: Saves) -> set[Key]:
        """Save conversations and clients and mark message ids seen, several at once; the
        message ids that had been seen already (marked meanwhile by someone else). Stores on a
        server make it one statement."""
        for (channel, key), saved in saves.conversations.items():
            self.save_conversation(channel, key, Conversation.model_validate_json(saved.data))
        for (channel, _), data in saves.clients.items():
            self.save_client(channel, Client.model_validate_json(data))
        return {
            (channel, message_id)
            for channel, message_id in sorted(saves.messages)
            if not self.mark_message_seen(channel, message_id)
        }

    # jobs still to be sent -----------------------------------------------------------------------
    def pending_params(self, lane: str, action: str) -> list[Any]:
        """The parameters of ``action``'s jobs in ``lane`` that are still to be sent, oldest
        first: what the service does not know yet (a client's data an agent changed, while
        the service's webhooks still carry the old). A state without an outbox has none."""
        return []

    # rule guards -----------------------------------------------------------------------------
    @abc.abstractmethod
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        """When the rule's cooldown on this conversation ends, if one was set."""

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        """Every rule's cooldown mark on a conversation (rule name -> end), expired ones too.

        The daemon reads them before evaluating an event outside the store's transaction."""
        raise NotImplementedError(f"{type(self).__name__} cannot list cooldowns")

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        """:meth:`cooldowns_of` for several conversations (each of them a key, marks or not).
        Stores should answer it in one query."""
        return {conversation: self.cooldowns_of(conversation) for conversation in conversation_ids}

    @abc.abstractmethod
    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        """Start (or extend) a rule's cooldown on a conversation."""

    @abc.abstractmethod
    def next_position(self, key: str, modulo: int) -> int:
        """Advance the counter ``key`` and return its previous value modulo ``modulo``.

        Round-robin assignment uses it; durable stores make it atomic across processes.
        """

    def next_free_position(self, key: str, size: int, free: Sequence[int]) -> int:
        """Of the ``size`` places the counter ``key`` goes round (round-robin assignment), the
        first of ``free`` at or after its position; the counter moves just past it, as though
        each place skipped had had its turn (as :meth:`next_position` called until it answers
        one of ``free``). One atomic step: durable stores make it one statement, whatever the
        places skipped, shared fairly by every process on the store."""
        wanted = free_places(size, free)
        while (place := self.next_position(key, size)) not in wanted:
            pass
        return place

    def hold_assignments(self) -> None:  # noqa: B027 - stores whose writers are serialized
        """Until the transaction ends, be the only one (of every daemon on the store) picking
        agents: the open conversations counted against ``max_open`` stay true until the pick
        is saved. Stores that run one writer at a time (SQLite) have nothing to do."""

    # who of the team is online -------------------------------------------------------------
    def set_presence(
        self,
        email: str,
        *,
        status: str | None = None,
        connected_until: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        """Record an agent's presence: their own ``status`` (``online`` or ``away``) and/or
        until when a console stream of theirs counts as connected (the stream renews it).
        What is not given is kept; an agent seen for the first time starts ``online``."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep presence")

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        """Every agent who ever signed in to the console (lower-cased email) with their
        presence at ``now``: ``online``, ``away`` (connected, but said so) or ``offline`` (no
        stream connected lately). Empty until an agent first signs in."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep presence")
