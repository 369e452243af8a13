"""The store interface: the conversation state the engine and providers read and update.

Providers derive events from it (is this chat closed? was this message seen?), the engine reads
cooldown marks from it, and ``assign`` keeps its round-robin positions in it. The in-memory
implementation serves ``rulekit test``; the daemon's durable stores (SQLite, PostgreSQL)
implement the same interface, so nothing here may assume one backend.

All methods are synchronous and are called inside :meth:`Store.transaction`: everything one event
changes is committed together, or not at all.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from datetime import datetime

from rulekit.event import Client, Conversation


class State(abc.ABC):
    """What one transaction can read and change."""

    # conversations ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        """The conversation a provider keys by ``key`` (e.g. Chatra's client id), if known."""

    @abc.abstractmethod
    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        """Create or replace the conversation stored under ``key``."""

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

    # messages --------------------------------------------------------------------------------
    @abc.abstractmethod
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        """Record a message id; return True when it had not been seen before."""

    @abc.abstractmethod
    def message_seen(self, channel: str, message_id: str) -> bool:
        """Whether a message id was recorded."""

    # rule guards -----------------------------------------------------------------------------
    @abc.abstractmethod
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        """When the rule's cooldown on this conversation ends, if one was set."""

    @abc.abstractmethod
    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        """Start (or extend) a rule's cooldown on a conversation."""

    @abc.abstractmethod
    def next_position(self, key: str, modulo: int) -> int:
        """Advance the counter ``key`` and return its previous value modulo ``modulo``.

        Round-robin assignment uses it; durable stores make it atomic across processes.
        """


class Store(abc.ABC):
    """A place conversation state lives."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[State]:
        """A unit of work: changes are kept when the block ends normally, dropped on error."""

    def close(self) -> None:  # noqa: B027 - optional for stores with nothing to release
        """Release resources."""


