"""``Idempotency-Key`` of the workspace API's writes: one key, one request.

The same agent sending the same key again with the *same* request (method, endpoint,
conversation and body) is a retry: a reply or a change of client data answers with the first
request's event (``"duplicate": true``, from the store), a change of assignee, tags or priority
answers what the first one did, even when the conversation changed since (a retry never makes
the change again). The same key with a *different* request is refused (**422**): answering it
like the first would drop what the agent meant to send. A retry that arrives while the first
request is still in progress is refused too (**409**, with ``Retry-After``): running it as well
would make the change twice. A first request lost with its daemon (claimed, never finished)
holds its key off for :data:`~rulekit.store.requests.IN_FLIGHT` at most; the next retry then
runs it.

The keys are kept in the store (:mod:`rulekit.store.requests`: the newest 2,000, for a day,
answers of up to 8 KB), so every daemon on it knows them — a retry that the balancer sends to
another daemon is still a retry — and a restart keeps them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from rulekit.errors import StoreUnavailable

if TYPE_CHECKING:
    from rulekit.store.base import JournaledStore
    from rulekit.store.requests import KeptRequest


RETRY_AFTER = 1
"""Seconds a retry of a request still in progress is told to wait (``Retry-After``)."""


class Conflict(Exception):
    """The key was used for a different request."""


class InFlight(Exception):
    """The key's first request is still in progress."""


def fingerprint(method: str, endpoint: str, conversation_id: str, body: dict[str, Any]) -> str:
    """What makes two requests the same request."""
    text = json.dumps([method, endpoint, conversation_id, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyKeys:
    """The keys agents used lately, with what they were used for, in ``store``."""

    def __init__(
        self, store: JournaledStore, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.now = now
        """What time it is for the claims (when a claim left in flight is lost)."""

    async def claim(
        self, who: str, key: str, print_: str, conversation_id: str
    ) -> tuple[bool, tuple[int, bytes] | None]:
        """Take ``key`` for the request ``print_``: whether it is new (call :meth:`release` if
        the request then fails, :meth:`finish` if it succeeds) and the answer kept for it;
        :class:`Conflict` when the key was used for another request, :class:`InFlight` while
        its first request is in progress, :class:`~rulekit.errors.StoreUnavailable` when the
        store cannot say."""
        now = self.now()

        def work() -> KeptRequest | None:
            with self.store.transaction() as state:
                return state.claim_request_key(who, key, print_, conversation_id, now=now)

        kept = await run_in_threadpool(work)
        if kept is None:
            return True, None
        if kept.fingerprint != print_:
            raise Conflict(key)
        if kept.in_flight:
            raise InFlight(key)
        return False, kept.answer

    async def finish(self, who: str, key: str, status: int, body: bytes | None = None) -> None:
        """The request of ``key`` succeeded with ``status``: its retries no longer wait, and get
        ``body`` when it is given (else they run the request again)."""

        def work() -> None:
            with self.store.transaction() as state:
                state.finish_request_key(who, key, status, body)

        await self._quietly(work)

    async def release(self, who: str, key: str) -> None:
        """The request of ``key`` failed: the key may be used again, for any request."""

        def work() -> None:
            with self.store.transaction() as state:
                state.release_request_key(who, key)

        await self._quietly(work)

    @staticmethod
    async def _quietly(work: Any) -> None:
        # the request itself is done: a store gone meanwhile must not turn its answer into an
        # error. Left in flight, the key holds off retries for IN_FLIGHT, then a retry does the
        # request again, which finds the change made (a reply: its event is recorded already)
        with contextlib.suppress(StoreUnavailable):
            await run_in_threadpool(work)
