"""A recorded conversation of a provider with the store, replayable to check nothing changed.

The daemon lets a provider normalize a webhook in a transaction that is then rolled back, with
the state wrapped in a :class:`RecordingState`: every call and its answer are kept. The events
are evaluated outside any transaction (in the evaluation worker), and the outcome is committed
in a second transaction that first :meth:`~Recording.replay` s the calls: when every call
answers as it did, the state the provider saw has not changed in between (another daemon, an
action of the dispatcher), its writes are applied again, and the events are still exactly what
that state yields. Otherwise the replay raises :class:`StateChanged` and the daemon starts over.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from rulekit.event import Client, Conversation
from rulekit.store.base import State
from rulekit.store.listing import ConversationQuery, ConversationSummary


class StateChanged(Exception):
    """The state answered a replayed call differently: what was derived from it is stale."""


@dataclass
class Recording:
    """The calls one provider made, in order: ``(method name, arguments, answer)``."""

    calls: list[tuple[str, tuple[Any, ...], Any]] = field(default_factory=list)

    def replay(self, state: State) -> None:
        """Make the same calls on ``state`` (writes included); raise :class:`StateChanged` at
        the first answer that differs."""
        for name, args, answer in self.calls:
            again = _kept(getattr(state, name)(*_restored(args)))
            if again != answer:
                raise StateChanged(f"{name}{args!r} answered {again!r}, not {answer!r}")


@dataclass(frozen=True)
class _Model:
    """A model as it was when recorded: its class and its JSON. Much cheaper to keep and to
    compare than a deep copy, and the provider may change the model afterwards."""

    cls: type[BaseModel]
    json: str

    def restore(self) -> BaseModel:
        return self.cls.model_validate_json(self.json)


def _kept(value: Any) -> Any:
    """``value`` as the recording keeps it: models as :class:`_Model`, other mutable data
    copied."""
    if value is None or isinstance(value, str | int | float | datetime):
        return value
    if isinstance(value, BaseModel):
        return _Model(type(value), value.model_dump_json())
    if isinstance(value, tuple):
        return tuple(_kept(item) for item in value)
    return copy.deepcopy(value)


def _restored(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(arg.restore() if isinstance(arg, _Model) else arg for arg in args)


class RecordingState(State):
    """``state``, with every call kept in :attr:`recording`."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.recording = Recording()

    def _call(self, name: str, *args: Any) -> Any:
        answer = getattr(self.state, name)(*args)
        # kept as they are now: a provider may change a model it was handed (or saved) afterwards
        self.recording.calls.append((name, _kept(args), _kept(answer)))
        return answer

    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        result: Conversation | None = self._call("get_conversation", channel, key)
        return result

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self._call("save_conversation", channel, key, conversation)

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        result: tuple[str, Conversation] | None = self._call(
            "find_conversation", channel, conversation_id
        )
        return result

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        result: dict[str, int] = self._call("open_conversations_by_assignee", channel)
        return result

    def get_client(self, channel: str, client_id: str) -> Client | None:
        result: Client | None = self._call("get_client", channel, client_id)
        return result

    def save_client(self, channel: str, client: Client) -> None:
        self._call("save_client", channel, client)

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        result: tuple[Conversation | None, Client | None]
        result = self._call("get_conversation_and_client", channel, key)
        return result

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        return bool(self._call("mark_message_seen", channel, message_id))

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        result: list[bool] = self._call("mark_messages_seen", channel, list(message_ids))
        return result

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        result: set[str] = self._call("seen_messages", channel, list(message_ids))
        return result

    def message_seen(self, channel: str, message_id: str) -> bool:
        return bool(self._call("message_seen", channel, message_id))

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        result: datetime | None = self._call("cooldown_until", rule, conversation_id)
        return result

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        result: dict[str, datetime] = self._call("cooldowns_of", conversation_id)
        return result

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self._call("set_cooldown", rule, conversation_id, until)

    def next_position(self, key: str, modulo: int) -> int:
        return int(self._call("next_position", key, modulo))

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        # kept as a call without a time: the replay asks for the presence at its own time
        answer = self.state.presence(now=now)
        self.recording.calls.append(("presence", (), _kept(answer)))
        return answer

    def hold_assignments(self) -> None:
        self._call("hold_assignments")


class Unwritten(State):
    """``state`` whose writes of conversations, clients and message ids are kept in memory,
    for a normalization whose transaction is rolled back anyway: its writes are made when its
    recording is replayed, so making them here too would only cost statements (round trips, on
    PostgreSQL). Every read answers as if they had been made. Reads that could depend on them
    in ways not kept here (counts and lists of conversations) first make them."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._conversations: dict[tuple[str, str], tuple[str | None, str]] = {}
        """(channel, key) -> the conversation's id and JSON."""
        self._clients: dict[tuple[str, str], str] = {}
        self._seen: set[tuple[str, str]] = set()

    def _write(self) -> None:
        """Make the writes kept so far (before a read that may depend on them)."""
        for (channel, key), (_, data) in self._conversations.items():
            self.state.save_conversation(channel, key, Conversation.model_validate_json(data))
        for (channel, _), data in self._clients.items():
            self.state.save_client(channel, Client.model_validate_json(data))
        for channel, message_id in self._seen:
            self.state.mark_message_seen(channel, message_id)
        self._conversations.clear()
        self._clients.clear()
        self._seen.clear()

    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        kept = self._conversations.get((channel, key))
        if kept is not None:
            return Conversation.model_validate_json(kept[1])
        return self.state.get_conversation(channel, key)

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self._conversations[(channel, key)] = (conversation.id, conversation.model_dump_json())

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        for (kept_channel, key), (kept_id, data) in self._conversations.items():
            if kept_channel == channel and kept_id == conversation_id:
                return key, Conversation.model_validate_json(data)
        found = self.state.find_conversation(channel, conversation_id)
        if found is not None and (channel, found[0]) in self._conversations:
            return None  # that key's conversation has another id now
        return found

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        self._write()
        return self.state.open_conversations_by_assignee(channel)

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        self._write()
        return self.state.list_conversations(query)

    def get_client(self, channel: str, client_id: str) -> Client | None:
        kept = self._clients.get((channel, client_id))
        if kept is not None:
            return Client.model_validate_json(kept)
        return self.state.get_client(channel, client_id)

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self._clients[(channel, client.id)] = client.model_dump_json()

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        if self.message_seen(channel, message_id):
            return False
        self._seen.add((channel, message_id))
        return True

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        if (channel, key) in self._conversations or (channel, key) in self._clients:
            return self.get_conversation(channel, key), self.get_client(channel, key)
        return self.state.get_conversation_and_client(channel, key)

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        before = self.seen_messages(channel, message_ids)
        answers = []
        for message_id in message_ids:
            new = message_id not in before
            if new:
                before.add(message_id)
                self._seen.add((channel, message_id))
            answers.append(new)
        return answers

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        kept = {m for m in message_ids if (channel, m) in self._seen}
        rest = [m for m in message_ids if m not in kept]
        return kept | self.state.seen_messages(channel, rest) if rest else kept

    def message_seen(self, channel: str, message_id: str) -> bool:
        return (channel, message_id) in self._seen or self.state.message_seen(channel, message_id)

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        return self.state.cooldown_until(rule, conversation_id)

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        return self.state.cooldowns_of(conversation_id)

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.state.set_cooldown(rule, conversation_id, until)

    def next_position(self, key: str, modulo: int) -> int:
        return self.state.next_position(key, modulo)

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        return self.state.cooldowns_for(conversation_ids)

    def hold_assignments(self) -> None:
        self.state.hold_assignments()

    def set_presence(
        self,
        email: str,
        *,
        status: str | None = None,
        connected_until: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        self.state.set_presence(email, status=status, connected_until=connected_until, now=now)

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        return self.state.presence(now=now)
