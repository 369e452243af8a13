"""The journal's ledger of request keys: the ``Idempotency-Key`` of each console write, with
what the request was, whether it finished and, for some, the answer it got.

A key is *in flight* from its claim until its request finishes: a retry meanwhile must wait
(the console answers 409), not run the request a second time. A claim whose request has not
finished within :data:`IN_FLIGHT` is taken as lost with its daemon (a crash, a restart), and
the next retry takes the key over and runs the request.

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
IN_FLIGHT = timedelta(seconds=60)
"""How long a claimed key whose request has not finished holds off its retries; after that the
request is taken as lost and a retry runs it again. A console write takes well under a second;
its slowest step, the evaluation of its event, is bounded by ``processing.event_wall`` (10 s by
default)."""
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
    in_flight: bool = False
    """Whether the first request is still in progress (claimed less than :data:`IN_FLIGHT`
    ago, not finished): a retry must wait for it."""


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
        None when the key is new (it is taken now, in flight: :meth:`finish_request_key` once
        the request succeeded, :meth:`release_request_key` if it failed), else what it was
        first used for, with ``in_flight`` while that request is in progress. A key claimed
        for the same request more than :data:`IN_FLIGHT` before ``now`` and never finished is
        taken over (None). Keys past the bounds are let go first. On a store that several
        daemons share, two claims of one key at once are one new and one not."""

    @abc.abstractmethod
    def finish_request_key(
        self, who: str, key: str, status: int, body: bytes | None = None
    ) -> None:
        """``who``'s request ``key`` succeeded with ``status``: its retries are no longer held
        off, and get ``body`` when it is given (kept unless longer than :data:`MAX_ANSWER`;
        without it, a retry runs the request again). Nothing when the key is no longer there."""

    @abc.abstractmethod
    def release_request_key(self, who: str, key: str) -> None:
        """Forget ``who``'s ``key``: its request failed, the key may be used again for any."""
