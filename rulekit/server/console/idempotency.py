"""``Idempotency-Key`` of the workspace API's writes: one key, one request.

The same agent sending the same key again with the *same* request (method, endpoint,
conversation and body) is a retry: a reply or a change of client data answers with the first
request's event (``"duplicate": true``, from the store), a change of assignee, tags or priority
answers what the first one did, even when the conversation changed since (a retry never makes
the change again). The same key with a *different* request is refused (**422**): answering it
like the first would drop what the agent meant to send.

The keys are kept in memory (the newest :data:`MAX_KEYS`, at most :data:`KEEP` seconds, an
answer only up to :data:`MAX_ANSWER` bytes: a few megabytes at most); a reply's own event id,
derived from the key, keeps replies single across restarts too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_KEYS = 2000
KEEP = 24 * 3600.0
MAX_ANSWER = 8192
"""Bytes of an answer kept for retries (a longer one is not kept: its retry is made again,
and finds nothing left to change)."""


@dataclass
class _Use:
    fingerprint: str
    at: float
    answer: tuple[int, bytes] | None = None


class Conflict(Exception):
    """The key was used for a different request."""


def fingerprint(method: str, endpoint: str, conversation_id: str, body: dict[str, Any]) -> str:
    """What makes two requests the same request."""
    text = json.dumps([method, endpoint, conversation_id, body], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyKeys:
    """The keys agents used lately, with what they were used for."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._uses: OrderedDict[tuple[str, str], _Use] = OrderedDict()

    def claim(self, who: str, key: str, print_: str) -> tuple[bool, tuple[int, bytes] | None]:
        """Take ``key`` for the request ``print_``: whether it is new (call :meth:`release` if
        the request then fails, :meth:`settle` if it succeeds) and the answer kept for it;
        :class:`Conflict` when the key was used for another request."""
        now = self.clock()
        while self._uses and now - next(iter(self._uses.values())).at > KEEP:
            self._uses.popitem(last=False)
        use = self._uses.get((who, key))
        if use is not None:
            if use.fingerprint != print_:
                raise Conflict(key)
            return False, use.answer
        self._uses[(who, key)] = _Use(print_, now)
        while len(self._uses) > MAX_KEYS:
            self._uses.popitem(last=False)
        return True, None

    def settle(self, who: str, key: str, answer: tuple[int, bytes] | None) -> None:
        """The request of ``key`` succeeded: keep ``answer`` (status, body) for its retries."""
        use = self._uses.get((who, key))
        if use is not None and (answer is None or len(answer[1]) <= MAX_ANSWER):
            use.answer = answer

    def release(self, who: str, key: str) -> None:
        """The request of ``key`` failed: the key may be used again, for any request."""
        self._uses.pop((who, key), None)
