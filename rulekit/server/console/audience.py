"""Which live-feed messages each viewer receives, and the recent ones kept for reconnects.

* a message about an event (``channel`` on the message, or on its ``event`` dict, or known
  from the event it names by ``event_id``) goes to the agents who may handle that channel;
* a ``sound`` goes to the agents it is addressed to (``to`` holds their email or ``"*"``) who
  may handle the channel of its event: ``"*"`` means every agent of that channel, never an
  agent without access to it (a sound whose channel is unknown reaches the admin only);
* a ``reload`` (it carries no client data) goes to everyone;
* anything else goes to the admin only. The admin receives everything.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from rulekit.runtime.feed import FeedClosed, LiveFeed, Subscription
from rulekit.server.console.sessions import Viewer

PUBLIC_TYPES = frozenset({"reload"})
RECENT = 500
KNOWN_EVENTS = 10_000


def event_id_of(message: dict[str, Any]) -> str | None:
    event = message.get("event")
    event_id = event.get("id") if isinstance(event, dict) else None
    if isinstance(event_id, str):
        return event_id
    value = message.get("event_id")
    return value if isinstance(value, str) else None


def channel_of(message: dict[str, Any]) -> str | None:
    """The channel a message names, if it names one."""
    channel = message.get("channel")
    if isinstance(channel, str):
        return channel
    event = message.get("event")
    channel = event.get("channel") if isinstance(event, dict) else None
    return channel if isinstance(channel, str) else None


def visible(viewer: Viewer, message: dict[str, Any], channel: str | None) -> bool:
    """Whether ``viewer`` receives ``message`` (about ``channel``, if known)."""
    if viewer.admin:
        return True
    kind = message.get("type")
    if kind in PUBLIC_TYPES:
        return True
    if not viewer.may_see_channel(channel):
        return False
    return kind != "sound" or viewer.hears(message.get("to"))


OPERATOR_DETAILS = ("errors", "error", "warnings")
"""What a ``reload`` message tells the operator only: a refused reload's errors quote the config,
its warnings name the rules' files (the admin reads them, and the daemon's log has them)."""


def as_told(viewer: Viewer, message: dict[str, Any]) -> dict[str, Any]:
    """``message`` as ``viewer`` receives it: an agent learns that a reload failed, not why."""
    if viewer.admin or message.get("type") != "reload":
        return message
    if not any(key in message for key in OPERATOR_DETAILS):
        return message
    return {key: value for key, value in message.items() if key not in OPERATOR_DETAILS}


class Recorder:
    """Keeps the recent messages (for ``Last-Event-ID`` reconnects and the page's first view)
    and the channel of every event it saw, so that later messages naming only an ``event_id``
    can be routed."""

    def __init__(self, feed: LiveFeed, lookup: Callable[[str], str | None]) -> None:
        self._feed = feed
        self._lookup = lookup
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._channels: OrderedDict[str, str] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.last_reload: dict[str, Any] | None = None

    def start(self) -> None:
        """Start recording (from the event loop; does nothing when already running)."""
        if self._task is None or self._task.done():
            subscription = self._feed.subscribe()
            self._task = asyncio.get_running_loop().create_task(self._run(subscription))

    async def _run(self, subscription: Subscription) -> None:
        try:
            while True:
                self.note(await subscription.get())
        except FeedClosed:
            pass
        finally:
            subscription.close()

    def note(self, message: dict[str, Any]) -> None:
        self.remember(message)
        self.recent.append(message)
        if message.get("type") == "reload":
            self.last_reload = message

    def remember(self, message: dict[str, Any]) -> None:
        event_id, channel = event_id_of(message), channel_of(message)
        if event_id and channel:
            self._channels[event_id] = channel
            self._channels.move_to_end(event_id)
            while len(self._channels) > KNOWN_EVENTS:
                self._channels.popitem(last=False)

    def known_channel(self, message: dict[str, Any]) -> str | None:
        """The channel of ``message`` as far as is known without asking the store (None:
        not known)."""
        channel = channel_of(message)
        if channel is not None:
            return channel
        event_id = event_id_of(message)
        return self._channels.get(event_id) if event_id is not None else None

    async def channel(self, message: dict[str, Any]) -> str | None:
        """The channel of ``message``: named by it, else that of the event it names."""
        channel = channel_of(message)
        if channel is not None:
            return channel
        event_id = event_id_of(message)
        if event_id is None:
            return None
        if event_id not in self._channels:
            from starlette.concurrency import run_in_threadpool

            found = await run_in_threadpool(self._lookup, event_id)
            if found is None:
                return None
            self._channels[event_id] = found
        return self._channels[event_id]
