"""The live feed: what the daemon tells the agents' console as it happens.

One :class:`LiveFeed` per daemon. Producers (ingest, processing, the dispatcher, the
``play_sound`` action through ``ActionContext.publish``) call :meth:`LiveFeed.publish` with a
JSON-ready dict that has a ``type`` (``event``, ``rule``, ``action``, ``sound``, ``reload``,
``dead_letter``, ...). Subscribers (one per open console page, over SSE) receive every message
published after they subscribed; a subscriber that falls behind loses its oldest messages rather
than slowing the daemon down (the page shows a gap marker and can reload history).

:meth:`LiveFeed.close` (the daemon's shutdown) ends every subscription: ``get`` raises
:class:`FeedClosed`, so the console's streams end instead of holding the shutdown up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

DEFAULT_BACKLOG = 1000


class FeedClosed(Exception):
    """The live feed was closed: the daemon is shutting down."""


class Subscription:
    """One subscriber's queue."""

    def __init__(
        self, feed: LiveFeed, backlog: int, counts: Callable[[dict[str, Any]], bool] | None = None
    ) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(backlog)
        self._counts = counts
        self.dropped = 0
        """How many messages were lost, of those ``counts`` says the subscriber would have
        received (all without it): a gap of messages it could not see is no gap to it, and
        telling it how many would tell how busy the rest of the daemon is."""
        self._ended = False

    def _end(self) -> None:
        self._ended = True
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wakes a waiting get()

    def _offer(self, message: dict[str, Any]) -> None:
        if self._queue.full():
            lost = self._queue.get_nowait()
            if lost is not None and (self._counts is None or self._counts(lost)):
                self.dropped += 1
        self._queue.put_nowait(message)

    async def get(self) -> dict[str, Any]:
        """The next message (waits until there is one); raises :class:`FeedClosed` once the
        feed is closed."""
        if self._ended:
            raise FeedClosed
        message = await self._queue.get()
        if message is None:
            raise FeedClosed
        return message

    def close(self) -> None:
        self._feed._subscribers.discard(self)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield await self.get()
        finally:
            self.close()


class LiveFeed:
    """In-process publish/subscribe for the console. Call from the event loop's thread, or use
    :meth:`publish_threadsafe` from worker threads."""

    def __init__(self, backlog: int = DEFAULT_BACKLOG) -> None:
        self._subscribers: set[Subscription] = set()
        self._backlog = backlog
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def subscribe(self, counts: Callable[[dict[str, Any]], bool] | None = None) -> Subscription:
        """Start receiving messages published from now on (a subscription to a closed feed
        ends at once); ``counts`` says which lost messages :attr:`Subscription.dropped`
        counts (those its subscriber would have received; all without it)."""
        self._loop = asyncio.get_running_loop()
        subscription = Subscription(self, self._backlog, counts)
        if self.closed:
            subscription._ended = True
        else:
            self._subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """End every subscription, and those made later (call from the event loop)."""
        self.closed = True
        for subscription in list(self._subscribers):
            subscription._end()
        self._subscribers.clear()

    @property
    def listening(self) -> bool:
        """Whether anyone subscribes: a producer builds its message only then (most daemons
        run with no console open, and the messages of every event and call add up)."""
        return bool(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` (a JSON-ready dict with a ``type``) to every subscriber; it gets a
        sequence number ``seq``."""
        if not self._subscribers:
            return
        message = {**message, "seq": next(self._ids)}
        for subscription in list(self._subscribers):
            subscription._offer(message)

    def publish_threadsafe(self, message: dict[str, Any]) -> None:
        """:meth:`publish` from a thread other than the event loop's."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.publish, message)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
