"""The in-memory store: state for ``rulekit test`` and for tests; gone when the process ends."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from rulekit.event import Client, Conversation
from rulekit.store.base import State, Store


class MemoryState(State):
    """State held in plain dictionaries."""

    def __init__(self) -> None:
        self.conversations: dict[tuple[str, str], Conversation] = {}
        self.clients: dict[tuple[str, str], Client] = {}
        self.seen: set[tuple[str, str]] = set()
        self.cooldowns: dict[tuple[str, str], datetime] = {}
        self.positions: dict[str, int] = {}

    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        found = self.conversations.get((channel, key))
        return found.model_copy(deep=True) if found else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.conversations[(channel, key)] = conversation.model_copy(deep=True)

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (conv_channel, _), conv in self.conversations.items():
            if conv.status == "open" and conv.assignee and channel in (None, conv_channel):
                key = conv.assignee.lower()
                counts[key] = counts.get(key, 0) + 1
        return counts

    def get_client(self, channel: str, client_id: str) -> Client | None:
        found = self.clients.get((channel, client_id))
        return found.model_copy(deep=True) if found else None

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.clients[(channel, client.id)] = client.model_copy(deep=True)

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        key = (channel, message_id)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def message_seen(self, channel: str, message_id: str) -> bool:
        return (channel, message_id) in self.seen

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        return self.cooldowns.get((rule, conversation_id))

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.cooldowns[(rule, conversation_id)] = until

    def next_position(self, key: str, modulo: int) -> int:
        current = self.positions.get(key, 0)
        self.positions[key] = current + 1
        return current % modulo if modulo > 0 else 0


class MemoryStore(Store):
    """An in-memory :class:`Store`; a failed transaction leaves the state as it was."""

    def __init__(self) -> None:
        self.state = MemoryState()

    @contextmanager
    def transaction(self) -> Iterator[State]:
        backup = copy.deepcopy(self.state.__dict__)
        try:
            yield self.state
        except BaseException:
            self.state.__dict__ = backup
            raise
