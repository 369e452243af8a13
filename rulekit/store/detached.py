"""States a provider's code is handed while no transaction is open.

The processor lets a provider normalize a body with no transaction open (a plugin's code may be
slow, or stuck on one body: the store's write lock must not wait for it). :func:`detached`
answers each call in a reading of its own (on SQLite, a snapshot on the reader connection,
which never holds the writer up); the daemon keeps the writes in memory in front of it
(:class:`~rulekit.store.cached.CachedState`) and records every call, so what the provider saw
is checked again when its events are recorded (:mod:`rulekit.store.recording`).

:class:`Fence` stands between a provider's call and the state it was handed: once the call is
given up (over its budget, it runs on in its thread), the fence is closed and every later call
of that code on the state raises, so it never changes what the daemon goes on with.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from rulekit.errors import ChannelError
from rulekit.store.base import JournaledStore, State

READS = frozenset(
    {
        "conversation_and_client_text",
        "conversation_by_id_text",
        "cooldown_until",
        "cooldowns_for",
        "cooldowns_of",
        "find_conversation",
        "get_client",
        "get_conversation",
        "get_conversation_and_client",
        "list_conversations",
        "message_seen",
        "open_conversations_by_assignee",
        "pending_params",
        "presence",
        "read_many",
        "seen_messages",
    }
)
"""The state's calls a detached state answers: its reads."""


class _Detached:
    """Each read made in a reading of the store of its own."""

    def __init__(self, store: JournaledStore, batches: bool) -> None:
        self._store = store
        self.batches = batches

    def __getattr__(self, name: str) -> Any:
        if name not in READS:
            # (a write in a reading fails as a read-only store would: "unavailable", which
            # the daemon waits out; a provider's write is the provider's error instead)
            raise ChannelError(
                f"a provider may not call {name} on the state it normalizes with: it reads"
                " and writes conversations, clients and message marks only"
            )
        store = self._store

        def call(*args: Any, **kwargs: Any) -> Any:
            with store.reading() as state:
                return getattr(state, name)(*args, **kwargs)

        return call


def detached(store: JournaledStore, *, batches: bool = False) -> State:
    """A state of ``store`` that answers each read in a reading of its own: no transaction is
    open between calls (``batches``: whether ``store``'s state reads in batches). Any other
    call raises :class:`~rulekit.errors.ChannelError`: the daemon keeps a provider's writes of
    conversations, clients and message marks in memory in front of it
    (:class:`~rulekit.store.cached.CachedState`)."""
    return cast(State, _Detached(store, batches))


class GivenUp(ChannelError):
    """The provider's call was given up: the state it was handed answers no more."""


class Fence:
    """``state`` as a provider's call is handed it (:attr:`state`), until :meth:`close`."""

    def __init__(self, state: State) -> None:
        self._inner = state
        self._lock = threading.Lock()
        self._closed = False
        self.state = cast(State, _Fenced(self))
        """What the provider's code is handed."""

    def close(self) -> None:
        """Refuse every later call (a call under way is waited for: the project's code, on the
        store)."""
        with self._lock:
            self._closed = True

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            if self._closed:
                raise GivenUp("the provider's call was given up: its state answers no more")
            return getattr(self._inner, name)(*args, **kwargs)


class _Fenced:
    def __init__(self, fence: Fence) -> None:
        self._fence = fence

    def __getattr__(self, name: str) -> Any:
        fence = self._fence
        member = getattr(fence._inner, name)
        if not callable(member):
            return member

        def call(*args: Any, **kwargs: Any) -> Any:
            return fence._call(name, args, kwargs)

        return call
