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
from typing import Any, Protocol

from pydantic import BaseModel

from rulekit.event import Client, Conversation
from rulekit.store.base import State
from rulekit.store.lookups import Lookups, saved_conversation

_READS = {
    "get_conversation": "conversations",
    "find_conversation": "conversation_ids",
    "get_client": "clients",
    "message_seen": "messages",
    "mark_message_seen": "messages",
}
"""The calls whose answers a :class:`~rulekit.store.lookups.Lookups` batch reads ahead."""


class StateChanged(Exception):
    """The state answered a replayed call differently: what was derived from it is stale."""


@dataclass
class Recording:
    """The calls one provider made, in order: ``(method name, arguments, answer)``."""

    calls: list[tuple[str, tuple[Any, ...], Any]] = field(default_factory=list)

    def lookups(self) -> Lookups:
        """What the calls read: read ahead in one batch, the replay reads nothing more (see
        :class:`~rulekit.store.cached.CachedState`)."""
        wanted = Lookups()
        saved: dict[tuple[str, str | None], str] = {}
        for name, args, answer in self.calls:
            if name == "save_conversation":
                saved[args[0], _conversation_id(args[2])] = args[1]
            kind = _READS.get(name)
            if (
                kind == "conversation_ids"
                and answer is not None
                and saved.get((args[0], args[1])) == answer[0]
            ):
                # the conversation found is one saved here before: a cache answers with it
                # without asking the store, as it did when the calls were made
                continue
            if kind is not None:
                getattr(wanted, kind).add((args[0], args[1]))
            elif name == "get_conversation_and_client":
                wanted.conversations.add((args[0], args[1]))
                wanted.clients.add((args[0], args[1]))
            elif name in ("mark_messages_seen", "seen_messages"):
                wanted.messages.update((args[0], message_id) for message_id in args[1])
        return wanted

    def replay(self, state: State) -> None:
        """Make the same calls on ``state`` (writes included); raise :class:`StateChanged` at
        the first answer that differs.

        A read of conversations and clients is first compared as the stored JSON, when the
        state offers it (:class:`StoredText`): the same text is the same answer, without
        validating the models again. Only a different text makes the call itself."""
        for name, args, answer in self.calls:
            if _written(state, name, args) or _stored(state, name, args) == answer:
                continue
            again = _kept(getattr(state, name)(*_restored(args)))
            if again != answer and again != _canonical(answer):
                raise StateChanged(f"{name}{args!r} answered {again!r}, not {answer!r}")


class StoredText(Protocol):
    """A state that can answer reads of conversations and clients with their stored JSON
    (:class:`rulekit.store.sql.state.SQLState`, :class:`rulekit.store.cached.CachedState`);
    a cached state also takes their writes as JSON."""

    def conversation_and_client_text(
        self, channel: str, key: str
    ) -> tuple[str | None, str | None]: ...

    def conversation_by_id_text(
        self, channel: str, conversation_id: str
    ) -> tuple[str, str] | None: ...


_UNKNOWN = object()


def _both_kept(conversation: str | None, client: str | None) -> tuple[_Model | None, ...]:
    """The answer of ``get_conversation_and_client`` as a recording keeps it, from JSON."""
    return (
        _Model(Conversation, conversation) if conversation else None,
        _Model(Client, client) if client else None,
    )


def _written(state: State, name: str, args: tuple[Any, ...]) -> bool:
    """Whether save ``name`` was made on ``state`` with the JSON recorded (no model validated
    and encoded again), which only a state taking writes as JSON can."""
    if name == "save_conversation" and isinstance(args[2], _Model):
        save = getattr(state, "save_conversation_text", None)
        if save is None or args[2].saved is None:
            return False
        save(args[0], args[1], args[2].saved)
        return True
    if name == "save_client" and isinstance(args[1], _Model):
        save = getattr(state, "save_client_text", None)
        if save is None or args[1].saved is None:
            return False
        save(args[0], args[1].saved, args[1].json)
        return True
    return False


def _stored(state: State, name: str, args: tuple[Any, ...]) -> Any:
    """The answer of read ``name`` as a recording keeps it, from the stored JSON; a value
    equal to no answer when ``state`` cannot tell so."""
    if name == "get_conversation_and_client":
        read = getattr(state, "conversation_and_client_text", None)
        if read is None:
            return _UNKNOWN
        return _both_kept(*read(*args))
    if name == "find_conversation":
        read = getattr(state, "conversation_by_id_text", None)
        if read is None:
            return _UNKNOWN
        found = read(*args)
        return (found[0], _Model(Conversation, found[1])) if found else None
    return _UNKNOWN


@dataclass(frozen=True)
class _Model:
    """A model as it was when recorded: its class and its JSON. Much cheaper to keep and to
    compare than a deep copy, and the provider may change the model afterwards."""

    cls: type[BaseModel]
    json: str
    saved: Any = field(default=None, compare=False)
    """A saved model's columns besides its JSON, as a state taking writes as JSON takes them
    (a :class:`~rulekit.store.lookups.SavedConversation`, a client's id)."""

    def restore(self) -> BaseModel:
        return self.cls.model_validate_json(self.json)


_SCALARS = frozenset({str, bool, int})


def _kept(value: Any) -> Any:
    """``value`` as the recording keeps it: models as :class:`_Model`, other mutable data
    copied."""
    if value is None or isinstance(value, str | int | float | datetime):
        return value
    if isinstance(value, BaseModel):
        return _Model(type(value), value.model_dump_json())
    if isinstance(value, tuple):
        return tuple(_kept(item) for item in value)
    if isinstance(value, list | set) and all(type(item) in _SCALARS for item in value):
        return value.copy()  # message ids, whether each was new: no deep copy needed
    return copy.deepcopy(value)


def _conversation_id(kept: Any) -> str | None:
    """The id of a conversation recorded as saved."""
    if isinstance(kept, _Model):
        if kept.saved is not None:
            return str(kept.saved.id) if kept.saved.id is not None else None
        return Conversation.model_validate_json(kept.json).id
    return kept.id if isinstance(kept, Conversation) else None


def _canonical(answer: Any) -> Any:
    """A recorded answer with its models' JSON as this version writes it (an answer kept as
    the stored JSON may be another version's writing of the same models)."""
    if isinstance(answer, _Model):
        return _Model(answer.cls, answer.restore().model_dump_json())
    if isinstance(answer, tuple):
        return tuple(_canonical(item) for item in answer)
    return answer


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
        save = getattr(self.state, "save_conversation_text", None)
        if save is None:
            self._call("save_conversation", channel, key, conversation)
            return
        # encoded once, for the state and for the recording
        saved = saved_conversation(conversation)
        save(channel, key, saved)
        kept = _Model(type(conversation), saved.data, saved)
        self.recording.calls.append(("save_conversation", (channel, key, kept), None))

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        read = getattr(self.state, "conversation_by_id_text", None)
        if read is None:
            result: tuple[str, Conversation] | None = self._call(
                "find_conversation", channel, conversation_id
            )
            return result
        # kept as the stored JSON, which the replay compares first: no encoding of the model
        found = read(channel, conversation_id)
        kept = (found[0], _Model(Conversation, found[1])) if found else None
        self.recording.calls.append(("find_conversation", (channel, conversation_id), kept))
        return (found[0], Conversation.model_validate_json(found[1])) if found else None

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        result: dict[str, int] = self._call("open_conversations_by_assignee", channel)
        return result

    def get_client(self, channel: str, client_id: str) -> Client | None:
        result: Client | None = self._call("get_client", channel, client_id)
        return result

    def save_client(self, channel: str, client: Client) -> None:
        save = getattr(self.state, "save_client_text", None)
        if save is None or client.id is None:
            self._call("save_client", channel, client)
            return
        data = client.model_dump_json()
        save(channel, client.id, data)
        self.recording.calls.append(
            ("save_client", (channel, _Model(type(client), data, client.id)), None)
        )

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        read = getattr(self.state, "conversation_and_client_text", None)
        if read is None:
            result: tuple[Conversation | None, Client | None]
            result = self._call("get_conversation_and_client", channel, key)
            return result
        # kept as the stored JSON, which the replay compares first: no encoding of the models
        conversation, client = read(channel, key)
        self.recording.calls.append(
            ("get_conversation_and_client", (channel, key), _both_kept(conversation, client))
        )
        return (
            Conversation.model_validate_json(conversation) if conversation else None,
            Client.model_validate_json(client) if client else None,
        )

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

    def pending_params(self, lane: str, action: str) -> list[Any]:
        result: list[Any] = self._call("pending_params", lane, action)
        return result

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        result: dict[str, datetime] = self._call("cooldowns_of", conversation_id)
        return result

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self._call("set_cooldown", rule, conversation_id, until)

    def next_position(self, key: str, modulo: int) -> int:
        return int(self._call("next_position", key, modulo))

    def next_free_position(self, key: str, size: int, free: Sequence[int]) -> int:
        return int(self._call("next_free_position", key, size, tuple(free)))

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        # kept as a call without a time: the replay asks for the presence at its own time
        answer = self.state.presence(now=now)
        self.recording.calls.append(("presence", (), _kept(answer)))
        return answer

    def hold_assignments(self) -> None:
        self._call("hold_assignments")
