"""Long polling (``getUpdates``), durably: for a bot whose daemon has no public URL.

Telegram keeps an update until a ``getUpdates`` call asks for updates after it (its
``offset``): that call is the acknowledgement. So the poller asks for the next updates only
once every update of the last answer is in the inbox, committed. A crash in between costs
nothing: Telegram sends those updates again, and the inbox knows them by their delivery key
(:func:`~rulekit_telegram.update.update_key`), so they are not processed twice.

An answer is read up to :data:`~rulekit.actions.answers.MAX_ANSWER` bytes. A hundred long
messages (4,096 characters each, written as JSON escapes, or with the message they reply to) are
more: an answer over the bound is asked for again with half as many updates, down to one, and
the batch is full again once the backlog is read (else the same call would fail over and over,
and polling never go past those messages). One update alone over the bound (nothing Telegram
sends should be, but nothing one client writes may stop the bot from reading every other
client) is skipped unread: its ``update_id`` is read from the answer's beginning (Telegram
writes it first), the next call's offset acknowledges it, and the log says so, without its
content.

Only one daemon polls a bot at a time: before each call the poller takes or renews a lease in
the store, longer than the call can take; a daemon that does not hold it waits and tries again,
and takes over when the holder stops renewing (it stopped, or died). An answer with no update
means every update before the call's offset is confirmed: the next calls send none, since after a
week without updates Telegram numbers the next one at random (maybe below the last offset, which
would confirm it unread). Telegram answers 409 to a
second poller, and to any poller while a webhook is set: the poller says so in the log and waits.
A call that brought no new update is followed by the next no sooner than :data:`IDLE_INTERVAL`
after it started (Telegram holds it for ``poll_timeout``; a server that answers at once is not
asked as fast as it answers). Flood control on ``getUpdates`` (429 with ``retry_after``) is
waited out, for at most :data:`~rulekit.errors.MAX_RETRY_AFTER`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import TYPE_CHECKING, Any

from rulekit.actions.answers import MAX_ANSWER
from rulekit.errors import ChannelError, StoreUnavailable, service_wait

from .botapi import BotAPIError, BotUnreachable
from .update import update_key

if TYPE_CHECKING:
    from rulekit.channels.base import Inbound

    from .provider import TelegramProvider

logger = logging.getLogger("rulekit.telegram")

POLL_TIMEOUT = 25
"""Seconds Telegram holds a ``getUpdates`` call open when there is nothing to send."""
LEASE = 90.0
"""Seconds the polling lease is held for: longer than one call with its network slack."""
BATCH = 100
"""Updates asked for per call (Telegram's maximum)."""
BACKOFF_MAX = 60.0
IDLE_INTERVAL = 1.0
"""Seconds at least from the start of a ``getUpdates`` call that brought no new update to the
start of the next: Telegram holds such a call ``poll_timeout`` seconds, but a server that
answers at once (a broken proxy, a ``timeout`` ignored, the same or unreadable updates again
and again) must not be asked as fast as it answers."""


class Poller:
    """Polls one channel's bot and hands each update to the inbox."""

    def __init__(
        self,
        provider: TelegramProvider,
        inbound: Inbound,
        *,
        poll_timeout: int = POLL_TIMEOUT,
        lease: float = LEASE,
        idle_interval: float = IDLE_INTERVAL,
    ) -> None:
        self.provider = provider
        self.inbound = inbound
        self.poll_timeout = poll_timeout
        self.lease = lease
        self.idle_interval = idle_interval
        self._next_call = 0.0
        """When (on the loop's clock) the next call may start: :data:`IDLE_INTERVAL` after
        one that brought nothing new."""
        self.batch = BATCH
        """Updates asked for in the next call: fewer after an answer over the size bound."""
        self.offset: int | None = None
        self.failures = 0
        self.skipped = 0
        """Updates skipped unread, each alone over the size bound of an answer."""

    @property
    def lease_name(self) -> str:
        """The lease of this channel's polling (one poller per channel, across daemons)."""
        return f"poll:{self.provider.channel}"

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end polling for good
                logger.exception("channel %s: polling failed", self.provider.channel)
                await self._back_off()

    async def step(self) -> int:
        """Hold the lease, fetch one batch and keep it; the number of updates kept."""
        try:
            held = await self.inbound.hold(self.lease_name, self.lease)
        except StoreUnavailable as exc:
            logger.warning("channel %s: cannot take the polling lease: %s", self.channel, exc)
            await self._back_off()
            return 0
        if not held:
            self.offset = None  # another daemon polls; its acknowledgements are Telegram's
            self.inbound.fetch_failing(None)  # (and whether its polling works is its to say)
            await asyncio.sleep(self.lease / 3)
            return 0
        loop = asyncio.get_running_loop()
        if (wait := self._next_call - loop.time()) > 0:
            await asyncio.sleep(wait)
        started, before = loop.time(), self.offset
        try:
            updates = await self.fetch()
        except (BotAPIError, BotUnreachable) as exc:
            if isinstance(exc, BotAPIError) and exc.too_large and self.batch > 1:
                self.batch = max(1, self.batch // 2)  # asked again at once, for fewer
                logger.info("channel %s: getUpdates asks for %d updates", self.channel, self.batch)
                return 0
            if isinstance(exc, BotAPIError) and exc.too_large and self.skip(exc.head):
                return 0  # asked again at once, past it
            await self._failed(exc)
            return 0
        self.inbound.fetch_failing(None)
        if len(updates) < self.batch:
            self.batch = BATCH  # the backlog is read: a full batch again
        kept = 0
        for update in updates:
            if not await self.keep(update):
                return kept  # the store failed: ask again for the same updates later
            kept += 1
        self.failures = 0
        # nothing new (none, only updates already acknowledged, or none with an update_id):
        # the next call waits, so an answer given at once is not asked for again at once
        self._next_call = started + self.idle_interval if self.offset == before else 0.0
        if not updates:
            # this call's offset confirmed every update before it: the next calls ask without
            # one, for the earliest unconfirmed update. After a week without updates Telegram
            # numbers the next one at random, maybe below the offset, which would confirm it
            # (and those after it) unread
            self.offset = None
        return kept

    @property
    def channel(self) -> str:
        return self.provider.channel

    async def fetch(self) -> list[Any]:
        """One ``getUpdates`` call from the current offset (which acknowledges what came
        before it)."""
        params: dict[str, Any] = {
            "timeout": self.poll_timeout,
            "limit": self.batch,
            "allowed_updates": ["message", "edited_message"],
        }
        if self.offset is not None:
            params["offset"] = self.offset
        result = await self.provider.api().call(
            "getUpdates", params, timeout=self.poll_timeout + 15
        )
        if not isinstance(result, list):
            raise BotAPIError(502, "getUpdates did not answer with a list")
        return result

    def skip(self, head: bytes) -> bool:
        """Move the offset past the one update of an answer over the size bound, whose
        beginning is ``head``; False when ``head`` does not tell which update it is."""
        update_id = first_update_id(head)
        if update_id is None or (self.offset is not None and update_id < self.offset):
            return False
        logger.warning(
            "channel %s: update %d is over the %d bytes read of an answer: skipped, unread",
            self.channel,
            update_id,
            MAX_ANSWER,
        )
        self.skipped += 1
        self.offset = update_id + 1
        return True

    async def keep(self, update: Any) -> bool:
        """Put one update in the inbox and move the offset past it; False when the store
        cannot take it now (the offset stays, so Telegram sends it again)."""
        update_id = update.get("update_id") if isinstance(update, dict) else None
        key = update_key(update)
        if key is None or not isinstance(update_id, int):
            logger.warning(
                "channel %s: an update without a usable update_id was skipped", self.channel
            )
            return True  # nothing can acknowledge it past the next one; it is not an update
        body = update_body(update)
        chat = self.provider.conversation_key(update)
        try:
            await self.inbound.accept(body, delivery_key=key, conversation_key=chat)
        except ChannelError as exc:
            logger.warning(
                "channel %s: update %s refused and skipped: %s", self.channel, update_id, exc
            )
        except StoreUnavailable as exc:
            logger.warning("channel %s: update %s not stored: %s", self.channel, update_id, exc)
            await self._back_off()
            return False
        self.offset = max(self.offset or 0, update_id + 1)
        return True

    async def _failed(self, exc: BotAPIError | BotUnreachable) -> None:
        wait = service_wait(exc.retry_after) if isinstance(exc, BotAPIError) else None
        if isinstance(exc, BotAPIError) and exc.status == 429 and wait:
            # at most MAX_RETRY_AFTER, as for every other call: a retry_after of years (a
            # broken proxy, a garbled answer) must not stop reading the bot's updates for good
            logger.warning("channel %s: flood control on getUpdates: %s", self.channel, exc)
            await asyncio.sleep(wait)
            return
        # (a revoked token, a webhook set, the Bot API unreachable, ...: /healthz says so once
        # it has lasted server.stall_after; a flood-control wait above is no failure)
        self.inbound.fetch_failing(str(exc))
        if isinstance(exc, BotAPIError) and exc.status == 409:
            logger.warning(
                "channel %s: Telegram refuses polling (%s); delete the webhook, or stop the "
                "other poller of this bot",
                self.channel,
                exc.description,
            )
        else:
            logger.warning("channel %s: getUpdates failed: %s", self.channel, exc)
        await self._back_off()

    async def _back_off(self) -> None:
        self.failures += 1
        delay = min(BACKOFF_MAX, 0.5 * 2 ** min(self.failures, 10))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))


def update_body(update: Any) -> bytes:
    """One update of a ``getUpdates`` answer written out for the inbox, as a webhook would
    carry it: UTF-8 JSON. A string holding a lone surrogate (``"\\ud800"`` in the answer: valid
    JSON, though not text) cannot be written as UTF-8: such an update is written with every
    character beyond ASCII as an escape, so the inbox keeps what Telegram sent and providers
    read U+FFFD, as for a webhook's body. (Raising instead made the poller ask for the same
    update again and again: one user's odd name stopped the bot reading everyone's.)"""
    text = json.dumps(update, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(update, separators=(",", ":")).encode()


UPDATES_HEAD = b'{"ok":true,"result":[{'
"""What comes before the first update's ``update_id`` in a ``getUpdates`` answer, but for
white space."""


def first_update_id(head: bytes) -> int | None:
    """The ``update_id`` of the first update of a ``getUpdates`` answer that begins with
    ``head`` (``{"ok":true,"result":[{"update_id":123,...``), or None when ``head`` does not
    begin so. Only structure comes before it: no string a client wrote can pass for it."""
    mark = head.find(b'"update_id"')
    if mark < 0 or b"".join(head[:mark].split()) != UPDATES_HEAD:
        return None
    rest = head[mark + len(b'"update_id"') :].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    digits = len(rest) - len(rest.lstrip(b"0123456789"))
    if not 0 < digits <= 19 or digits == len(rest):  # none, or cut off by the head's end
        return None
    return int(rest[:digits])
