"""The journal's ledger of request keys: the ``Idempotency-Key`` of each console write, with
what the request was and, for some, the answer it got.

The ledger is in the store so that every daemon on it sees the same keys (a retry that a
balancer sends to another daemon is still recognised) and a restart keeps them. It is bounded
like a cache: the newest :data:`MAX_KEYS` keys, none older than :data:`KEEP`, answers of at most
:data:`MAX_ANSWER` bytes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_KEYS = 2000
"""Keys kept (of every agent together); using one more lets the oldest go."""
KEEP = timedelta(hours=24)
"""How long a key is kept after its first use."""
MAX_ANSWER = 8192
"""Bytes of an answer kept for retries (a longer one is not kept: its retry is made again,
and finds nothing left to change)."""


@dataclass(frozen=True)
class KeptRequest:
    """What a key was first used for."""

    fingerprint: str
    """What makes two requests the same request (the caller's digest of it)."""
    answer: tuple[int, bytes] | None = None
    """The answer kept for retries (HTTP status, body), if any was."""


class RequestKeys(abc.ABC):
    """The request-key part of :class:`rulekit.store.base.Journal`."""

    @abc.abstractmethod
    def claim_request_key(
        self,
        who: str,
        key: str,
        fingerprint: str,
        conversation_id: str,
        *,
        now: datetime | None = None,
    ) -> KeptRequest | None:
        """Take ``who``'s ``key`` for the request ``fingerprint`` (about ``conversation_id``):
        None when the key is new (it is taken now: :meth:`keep_request_answer` once the request
        succeeded, :meth:`release_request_key` if it failed), else what it was first used for.
        Keys past the bounds are let go first. On a store that several daemons share, two
        claims of one key at once are one new and one not."""

    @abc.abstractmethod
    def keep_request_answer(self, who: str, key: str, status: int, body: bytes) -> None:
        """Keep the answer of ``who``'s request ``key`` for its retries (not when ``body`` is
        longer than :data:`MAX_ANSWER`, nor when the key is no longer there)."""

    @abc.abstractmethod
    def release_request_key(self, who: str, key: str) -> None:
        """Forget ``who``'s ``key``: its request failed, the key may be used again for any."""
