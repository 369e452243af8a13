"""Client data from Chatra's API, for webhooks that lack it (``fetch_client: true``).

Chatra's webhooks may leave out what it knows of a visitor (name, email, last visit, IP, chat
language, browser, OS, location). When the setting is on, a webhook whose client lacks any of
those fields (among the channel's ``client_data``) asks for the client once: the request is
queued, and the channel's fetching task (:meth:`ChatraProvider.fetch_updates
<rulekit_chatra.provider.ChatraProvider.fetch_updates>`, run by the daemon beside the webhooks)
calls ``GET /clients/{id}``, one call at a time and at most one per ``interval``. What Chatra
answers goes into the inbox like a webhook (``eventName: rulekitClientFetched``), after the
events of the conversation before it, and updates the client there: a changed name, email or
phone is a ``client_updated`` event, as for a webhook. Intake never waits for any of it.

Each client is asked for once per ``ttl`` (a client Chatra does not know either, a visitor who
stays anonymous); a rate limit (429) or a failure of Chatra's is retried later (at most
``MAX_TRIES`` calls a client), a refusal (404: not a client of this account) is not. The queue
lives in the daemon's memory: a restart or a reload forgets what was not fetched yet, and the
next webhook of the client asks again.

Of an answer, the body keeps only what the parser reads for the channel's ``client_data``
(:func:`kept_of`): Chatra's visitor holds more (the pages of the last visit, whose addresses
may carry tokens and emails in their query strings; the IP address, custom data a channel does
not take), which rulekit asked for but would never use, and must not keep in its inbox.

Chatra's rate limit is the account's, shared with the replies and changes of client data the
dispatcher sends with the same keys. So the fetcher and the dispatcher keep one pause per
channel (:meth:`Inbound.service_paused <rulekit.channels.base.Inbound.service_paused>`, the
dispatcher's service-wide pace): a 429 answered to a fetch pauses the replies for its
Retry-After (without one, for the fetch's backoff: ``interval`` · 2, 4, 8), reported with
:meth:`Inbound.pause_service <rulekit.channels.base.Inbound.pause_service>`; a 429 answered to a
reply holds back the fetches just as long. With several daemons on PostgreSQL the pause holds for
all of them. Fetching comes after the replies: it takes no send slot of theirs, so it holds a
reply back only for a pause Chatra asked for, and after a pause it waits one more ``interval``,
so that the replies the pause held back go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from rulekit.errors import (
    ChannelError,
    PermanentActionError,
    RetryableActionError,
    StoreUnavailable,
)
from rulekit.event import Client

from .payload import CONTACT_KEYS, FETCHED, FETCHED_AT

if TYPE_CHECKING:
    from rulekit.channels.base import Inbound

logger = logging.getLogger("rulekit.chatra")

WANTED: tuple[str, ...] = (
    "name",
    "email",
    "last_visit",
    "ip",
    "language",
    "browser",
    "os",
    "country",
    "city",
)
"""The client fields whose absence asks for the client (those Chatra's dashboard shows)."""

INTERVAL = 1.0
"""Seconds between two calls of ``GET /clients/{id}``."""
TTL = 3600.0
"""Seconds a client is not asked for again."""
MAX_PENDING = 1000
"""Clients waiting to be fetched at most; more are dropped (asked for on their next webhook)."""
MAX_TRIES = 3
TIMEOUT = 10.0

GetClient = Callable[[str], Awaitable[dict[str, Any]]]


class ClientFetcher:
    """The queue of clients to fetch for one channel, and the task that fetches them."""

    def __init__(
        self,
        fields: Iterable[str],
        *,
        interval: float = INTERVAL,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.taken = frozenset(fields)
        """The channel's ``client_data``: what is kept of an answer (:func:`kept_of`)."""
        self.fields = tuple(field for field in WANTED if field in self.taken)
        self.interval = interval
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()  # parse() runs in worker threads
        self._pending: deque[tuple[str, int]] = deque()
        self._asked: OrderedDict[str, float] = OrderedDict()
        """Clients queued or fetched, with when: not asked for again before ``ttl``."""
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lacks(self, client: Client) -> bool:
        """Whether ``client`` lacks a field worth fetching."""
        return any(getattr(client, field) in (None, "") for field in self.fields)

    def want(self, client_id: str) -> bool:
        """Queue ``client_id`` unless it was asked for within ``ttl`` (or the queue is full);
        whether it was queued. Thread-safe; never waits."""
        now = self.clock()
        with self._lock:
            asked = self._asked.get(client_id)
            if asked is not None and now - asked < self.ttl:
                return False
            if len(self._pending) >= MAX_PENDING:
                return False
            self._asked[client_id] = now
            self._asked.move_to_end(client_id)
            while len(self._asked) > MAX_PENDING * 10:
                self._asked.popitem(last=False)
            self._pending.append((client_id, 0))
        self._notify()
        return True

    @property
    def pending(self) -> list[str]:
        """The clients waiting to be fetched, in order."""
        with self._lock:
            return [client_id for client_id, _ in self._pending]

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the daemon stopped
                loop.call_soon_threadsafe(wake.set)

    def _next(self) -> tuple[str, int] | None:
        with self._lock:
            return self._pending.popleft() if self._pending else None

    def _again(self, client_id: str, tries: int) -> None:
        with self._lock:
            self._pending.append((client_id, tries))

    async def run(self, inbound: Inbound, get_client: GetClient) -> None:
        """Fetch the queued clients, one at a time, paced, until cancelled; hand each answer
        to ``inbound``."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        last = -self.interval
        while True:
            item = self._next()
            if item is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            last = await self._ready(inbound, last)
            client_id, tries = item
            pause = await self._fetch(inbound, get_client, client_id, tries)
            if pause:
                await asyncio.sleep(pause)

    async def _ready(self, inbound: Inbound, last: float) -> float:
        """Wait until the next call may go: ``interval`` after the one at ``last``, and not
        while Chatra's account is paused (by a fetch's 429 or a reply's), nor for one more
        ``interval`` after such a pause, which the replies it held back have first. Returns
        when the call goes (on :attr:`clock`)."""
        while True:
            paused = await inbound.service_paused()
            if paused > 0:
                await asyncio.sleep(paused)
                last = self.clock()
                continue
            wait = last + self.interval - self.clock()
            if wait <= 0:
                return self.clock()
            await asyncio.sleep(wait)

    async def _fetch(
        self, inbound: Inbound, get_client: GetClient, client_id: str, tries: int
    ) -> float:
        """Fetch one client and hand it to the inbox; how long to pause after (a failure of
        Chatra's, an unreachable store). A rate limit pauses the whole account instead (the
        replies too), which :meth:`_ready` waits for."""
        try:
            data = await get_client(client_id)
        except RetryableActionError as exc:
            if tries + 1 < MAX_TRIES:
                self._again(client_id, tries + 1)
            logger.warning("cannot fetch a client from Chatra: %s", exc)
            backoff = exc.retry_after or self.interval * 2 ** (tries + 1)
            if exc.status == 429:
                await inbound.pause_service(backoff)
                return 0.0
            return backoff
        except PermanentActionError as exc:
            if exc.status in (401, 403):  # no client's answer: the keys' (every fetch fails)
                logger.warning("cannot fetch clients from Chatra: %s", exc)
            else:
                logger.info("Chatra has no data for a client: %s", exc)
            return 0.0
        # when it was fetched: the same answer fetched again (the client changed back and
        # forth meanwhile) is a body, and a change, of its own; a redelivery keeps it
        body = json.dumps(
            {
                "eventName": FETCHED,
                "client": {**kept_of(data, self.taken), "id": client_id},
                FETCHED_AT: str(time.time_ns()),
            },
            sort_keys=True,
        ).encode()
        digest = hashlib.sha256(body).hexdigest()[:24]
        try:
            await inbound.accept(
                body, delivery_key=f"client:{client_id}:{digest}", conversation_key=client_id
            )
        except StoreUnavailable as exc:
            self._again(client_id, tries)
            logger.warning("cannot keep a fetched client: %s", exc)
            return self.interval * 4
        except ChannelError as exc:
            logger.warning("a fetched client was refused: %s", exc)
        return 0.0


_ALWAYS_KEPT = ("chatId", "chatLink", "displayedName")
_KEYS_OF_FIELDS = {
    "ip": "ip",
    "browser": "browser",
    "os": "os",
    "language": "chatLanguage",
    "browser_language": "browserLanguage",
    "country": "country",
    "city": "city",
}
_INFO_KEYS = ("info", "basicInfo", "integrationData")


def kept_of(data: dict[str, Any], taken: frozenset[str]) -> dict[str, Any]:
    """What is kept of Chatra's answer about a visitor: the keys
    :func:`rulekit_chatra.payload.read_payload` reads for the ``client_data`` fields ``taken``
    (with the chat's id and link and the name Chatra shows), nothing else."""
    kept = {key: data[key] for key in _ALWAYS_KEPT if key in data}
    for field, key in _KEYS_OF_FIELDS.items():
        if field in taken and key in data:
            kept[key] = data[key]
    visit = data.get("lastVisit")
    if "last_visit" in taken and isinstance(visit, dict) and "startedAt" in visit:
        kept["lastVisit"] = {"startedAt": visit["startedAt"]}
    custom = "custom" in taken
    for key in _INFO_KEYS:
        source = data.get(key)
        if isinstance(source, dict):
            part = {
                name: value
                for name, value in source.items()
                if (name in taken if name in CONTACT_KEYS else custom)
            }
            if part:
                kept[key] = part
    return kept
