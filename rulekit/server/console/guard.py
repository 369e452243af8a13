"""Who may call the workspace API, and how often: a session cookie or a bearer token, the
cross-site check of writes, and a rate limit per agent.

* **Identity.** ``Authorization: Bearer <token>`` (an agent's personal token, or the admin's)
  or the console's session cookie. A wrong bearer token counts as a failed sign-in (the
  sign-in throttle applies to it).
* **Cross-site writes.** A write sent with the session cookie must carry
  ``Content-Type: application/json`` (a page of another site cannot send that without the
  browser asking first, and the API answers no such question) and, when the browser sends an
  ``Origin``, come from the console's own origin. Bearer tokens are never sent by a browser on
  its own, so requests carrying one need neither.
* **Rate.** Each agent (and the admin) has a bucket of :data:`WRITE_BURST` writes that refills
  at :data:`WRITE_RATE` per second; an empty bucket answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request

WRITE_BURST = 30.0
WRITE_RATE = 1.0
MAX_AGENTS = 10_000


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header ("" for a malformed one), or None
    when the request has no such header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def json_content(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class WriteBudget:
    """Token buckets of writes, one per agent (by email; the admin is ``"admin"``)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        burst: float = WRITE_BURST,
        rate: float = WRITE_RATE,
    ) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, who: str) -> float:
        """Take one write from ``who``'s bucket: 0 when taken, else the seconds to wait."""
        now = self.clock()
        tokens, at = self._buckets.pop(who, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens < 1:
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[who] = (tokens - 1, now)
        while len(self._buckets) > MAX_AGENTS:
            self._buckets.popitem(last=False)
        return 0.0
