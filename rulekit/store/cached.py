"""A state in front of a store's transaction that reads in batches and writes in one.

On a database server each statement is a round trip. :class:`CachedState` answers the reads
of conversations, clients and message marks from memory once read, reads several at once
(:meth:`CachedState.prefetch`, one :meth:`~rulekit.store.base.State.read_many`), and keeps
their writes until :meth:`CachedState.flush` saves them together (one
:meth:`~rulekit.store.base.State.write_many`). Every read answers as if the writes kept had been
made; reads that could depend on them in ways not kept here (counts and lists of
conversations) first flush them. Everything else goes to the store's state as it is.

The daemon uses it twice per round of webhooks: to normalize the bodies in a transaction that
is rolled back (the writes are never flushed: they are made again when the recording is
replayed), and to replay the recordings in the transaction that commits them (every read of
the round in one query, every write in one statement). A state that writes back what it read
(the replay, an action's job: :func:`holding`) holds what it reads until its transaction ends
(``hold``): on a store running several transactions at once (PostgreSQL), a change committed
between the read and the write would otherwise be written over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from rulekit.event import Client, Conversation
from rulekit.store.base import State, Store
from rulekit.store.listing import ConversationQuery, ConversationSummary
from rulekit.store.lookups import Key, Lookups, SavedConversation, Saves, saved_conversation


class CachedState(State):
    """``state`` with reads of conversations, clients and message marks kept in memory and
    their writes kept until :meth:`flush`; with ``hold``, the conversations and clients it
    reads are held until the transaction ends (:meth:`State.read_many
    <rulekit.store.base.State.read_many>`)."""

    def __init__(self, state: State, *, hold: bool = False) -> None:
        self.state = state
        self.hold = hold
        self._conversations: dict[Key, tuple[str | None, str] | None] = {}
        """(channel, key) -> the conversation's id and JSON; None: none stored."""
        self._keys_by_id: dict[Key, list[str]] = {}
        """(channel, id) -> the keys of :attr:`_conversations` that held that id, in their
        order there (a key holding another id now is skipped): a conversation found by its id
        in one look-up, not by going through every one kept (a round of n bodies asked n times
        through n conversations)."""
        self._ids: dict[Key, str | None] = {}
        """(channel, id) -> the key the store holds it under; None: none holds it."""
        self._clients: dict[Key, str | None] = {}
        self._seen: dict[Key, bool] = {}
        self._saves = Saves()

    # batches ---------------------------------------------------------------------------------
    def prefetch(self, wanted: Lookups) -> None:
        """Read what ``wanted`` names and is not known yet, in one batch."""
        missing = Lookups(
            {key for key in wanted.conversations if key not in self._conversations},
            {key for key in wanted.conversation_ids if key not in self._ids},
            {key for key in wanted.clients if key not in self._clients},
            {key for key in wanted.messages if key not in self._seen},
        )
        if missing:
            self._read(missing)

    def _read(self, missing: Lookups) -> None:
        """Read ``missing`` (none of it known yet) and keep what was found."""
        found = self.state.read_many(missing, hold=self.hold)
        for key, kept in found.conversations.items():
            if key not in self._conversations:
                self._keep(key, kept)
        for (channel, conversation_id), by_id in found.conversation_ids.items():
            self._ids.setdefault((channel, conversation_id), by_id[0] if by_id else None)
            if by_id is not None and (channel, by_id[0]) not in self._conversations:
                self._keep((channel, by_id[0]), (conversation_id, by_id[1]))
        for key, client in found.clients.items():
            self._clients.setdefault(key, client)
        for key, seen in found.messages.items():
            self._seen.setdefault(key, seen)

    def flush(self) -> set[Key]:
        """Make the writes kept so far, in one batch; the message ids marked here as new that
        the store had seen meanwhile (someone else marked them)."""
        if not self._saves:
            return set()
        saves, self._saves = self._saves, Saves()
        return self.state.write_many(saves)

    # conversations ---------------------------------------------------------------------------
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        if (channel, key) not in self._conversations and self.hold:
            self.prefetch(Lookups(conversations={(channel, key)}))
        if (channel, key) not in self._conversations:
            stored = self.state.get_conversation(channel, key)
            self._keep(
                (channel, key),
                (stored.id, stored.model_dump_json()) if stored is not None else None,
            )
            return stored
        kept = self._conversations[channel, key]
        return Conversation.model_validate_json(kept[1]) if kept is not None else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.save_conversation_text(channel, key, saved_conversation(conversation))

    def save_conversation_text(self, channel: str, key: str, saved: SavedConversation) -> None:
        """:meth:`save_conversation` of a conversation already written as the store keeps it
        (its JSON, and the columns read from it): nothing encoded again."""
        self._keep((channel, key), (saved.id, saved.data))
        self._saves.conversations[channel, key] = saved

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        found = self.conversation_by_id_text(channel, conversation_id)
        return (found[0], Conversation.model_validate_json(found[1])) if found else None

    def conversation_by_id_text(self, channel: str, conversation_id: str) -> tuple[str, str] | None:
        """:meth:`find_conversation` 's answer with the conversation as the JSON kept."""
        kept = self._kept_by_id(channel, conversation_id)
        if kept is None and self.hold and (channel, conversation_id) not in self._ids:
            self.prefetch(Lookups(conversation_ids={(channel, conversation_id)}))
            kept = self._kept_by_id(channel, conversation_id)
        if kept is not None:
            return kept
        if (channel, conversation_id) not in self._ids:
            found = self._by_id_text(channel, conversation_id)
            self._ids[channel, conversation_id] = found[0] if found is not None else None
            if found is not None and (channel, found[0]) not in self._conversations:
                self._keep((channel, found[0]), (conversation_id, found[1]))
                return found
        # the key holding it holds another id now (changed here), or none holds it
        return None

    def _keep(self, key: Key, kept: tuple[str | None, str] | None) -> None:
        """Keep a conversation (or that none is stored) under ``key``, found by its id too."""
        new = key not in self._conversations
        self._conversations[key] = kept
        if kept is not None and kept[0] is not None:
            keys = self._keys_by_id.setdefault((key[0], kept[0]), [])
            if key[1] not in keys:
                keys.append(key[1])
                if not new and len(keys) > 1:  # a key kept before: in its place among them
                    order = {k: n for n, k in enumerate(self._conversations)}
                    keys.sort(key=lambda k: order[key[0], k])

    def _kept_by_id(self, channel: str, conversation_id: str) -> tuple[str, str] | None:
        """The first conversation kept (in the order kept) whose id is ``conversation_id``."""
        for key in self._keys_by_id.get((channel, conversation_id), ()):
            kept = self._conversations[channel, key]
            if kept is not None and kept[0] == conversation_id:
                return key, kept[1]
        return None

    def _by_id_text(self, channel: str, conversation_id: str) -> tuple[str, str] | None:
        read = getattr(self.state, "conversation_by_id_text", None)
        if read is not None:
            found: tuple[str, str] | None = read(channel, conversation_id)
            return found
        by_id = self.state.find_conversation(channel, conversation_id)
        return (by_id[0], by_id[1].model_dump_json()) if by_id is not None else None

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        self.flush()
        return self.state.open_conversations_by_assignee(channel)

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        self.flush()
        return self.state.list_conversations(query)

    # clients ---------------------------------------------------------------------------------
    def get_client(self, channel: str, client_id: str) -> Client | None:
        if (channel, client_id) not in self._clients and self.hold:
            self.prefetch(Lookups(clients={(channel, client_id)}))
        if (channel, client_id) not in self._clients:
            stored = self.state.get_client(channel, client_id)
            self._clients[channel, client_id] = (
                stored.model_dump_json() if stored is not None else None
            )
            return stored
        kept = self._clients[channel, client_id]
        return Client.model_validate_json(kept) if kept is not None else None

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.save_client_text(channel, client.id, client.model_dump_json())

    def save_client_text(self, channel: str, client_id: str, data: str) -> None:
        """:meth:`save_client` of a client already written as its JSON."""
        self._clients[channel, client_id] = data
        self._saves.clients[channel, client_id] = data

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        if (channel, key) not in self._conversations or (channel, key) not in self._clients:
            self.prefetch(Lookups(conversations={(channel, key)}, clients={(channel, key)}))
        return self.get_conversation(channel, key), self.get_client(channel, key)

    def conversation_and_client_text(self, channel: str, key: str) -> tuple[str | None, str | None]:
        """:meth:`get_conversation_and_client` 's answer as the JSON kept of each."""
        wanted = (channel, key)
        if wanted not in self._conversations and wanted not in self._clients:
            self._read(Lookups(conversations={wanted}, clients={wanted}))
        elif wanted not in self._conversations or wanted not in self._clients:
            self.prefetch(Lookups(conversations={wanted}, clients={wanted}))
        if (channel, key) not in self._conversations:
            self.get_conversation(channel, key)
        if (channel, key) not in self._clients:
            self.get_client(channel, key)
        kept = self._conversations[channel, key]
        return (kept[1] if kept is not None else None), self._clients[channel, key]

    # messages --------------------------------------------------------------------------------
    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        self._read_marks(channel, message_ids)
        return [self.mark_message_seen(channel, message_id) for message_id in message_ids]

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        self._read_marks(channel, message_ids)
        return {m for m in message_ids if self.message_seen(channel, m)}

    def _read_marks(self, channel: str, message_ids: Sequence[str]) -> None:
        """Read the marks of ``message_ids`` not known yet, at once (the usual one: by the
        store's one-mark read, which costs less than a batch of one)."""
        missing = {m for m in message_ids if (channel, m) not in self._seen}
        if len(missing) == 1:
            self.message_seen(channel, missing.pop())
        elif missing:
            self.prefetch(Lookups(messages={(channel, message_id) for message_id in missing}))

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        if self.message_seen(channel, message_id):
            return False
        self._seen[channel, message_id] = True
        self._saves.messages.add((channel, message_id))
        return True

    def message_seen(self, channel: str, message_id: str) -> bool:
        if (channel, message_id) not in self._seen:
            self._seen[channel, message_id] = self.state.message_seen(channel, message_id)
        return self._seen[channel, message_id]

    # the rest, as the store answers ----------------------------------------------------------
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        return self.state.cooldown_until(rule, conversation_id)

    def pending_params(self, lane: str, action: str) -> list[Any]:
        return self.state.pending_params(lane, action)

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        return self.state.cooldowns_of(conversation_id)

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        return self.state.cooldowns_for(conversation_ids)

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.state.set_cooldown(rule, conversation_id, until)

    def next_position(self, key: str, modulo: int) -> int:
        return self.state.next_position(key, modulo)

    def next_free_position(self, key: str, size: int, free: Sequence[int]) -> int:
        return self.state.next_free_position(key, size, free)

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


@contextlib.contextmanager
def holding(store: Store) -> Iterator[CachedState]:
    """A transaction of ``store`` for a change that reads conversations or clients and writes
    them back (an action run as a job): what it reads is held until it commits (see
    :meth:`State.read_many <rulekit.store.base.State.read_many>`), what it writes is written
    when the block ends."""
    with store.transaction() as state:
        held = CachedState(state, hold=True)
        yield held
        held.flush()


class _ProbeEnd(Exception):
    """The normalization asked for something a probe does not answer."""


class _Probe(State):
    """A state that answers every read of a conversation, a client or a message mark with
    "none", noting what was asked; anything else ends the probe."""

    def __init__(self, wanted: Lookups) -> None:
        self.wanted = wanted

    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        self.wanted.conversations.add((channel, key))
        return None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        pass

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        self.wanted.conversation_ids.add((channel, conversation_id))
        return None

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        raise _ProbeEnd

    def get_client(self, channel: str, client_id: str) -> Client | None:
        self.wanted.clients.add((channel, client_id))
        return None

    def save_client(self, channel: str, client: Client) -> None:
        pass

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        self.wanted.messages.add((channel, message_id))
        return True

    def message_seen(self, channel: str, message_id: str) -> bool:
        self.wanted.messages.add((channel, message_id))
        return False

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        return self.get_conversation(channel, key), self.get_client(channel, key)

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        return [self.mark_message_seen(channel, message_id) for message_id in message_ids]

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        self.wanted.messages.update((channel, message_id) for message_id in message_ids)
        return set()

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        raise _ProbeEnd

    def pending_params(self, lane: str, action: str) -> list[Any]:
        raise _ProbeEnd

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        raise _ProbeEnd

    def next_position(self, key: str, modulo: int) -> int:
        raise _ProbeEnd

    def next_free_position(self, key: str, size: int, free: Sequence[int]) -> int:
        raise _ProbeEnd


def probe(normalizations: Sequence[Callable[[State], Any]]) -> Lookups:
    """What ``normalizations`` read, found by running each against a state that answers
    "none" to everything and changes nothing: a first guess of what to :meth:`prefetch
    <CachedState.prefetch>` for them. A normalization that reads what a first answer leads to
    (or fails on "none") reads the rest one call at a time, as without the guess."""
    wanted = Lookups()
    for normalize in normalizations:
        with contextlib.suppress(Exception):  # a guess: whatever it read so far is kept
            normalize(_Probe(wanted))
    return wanted
