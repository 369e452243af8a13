"""The ``telegram-bot`` provider: a Telegram bot's updates in, replies to its users out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rulekit.actions.pacing import Limit
from rulekit.actions.telegram_text import MAX_MESSAGE_LENGTH, truncate
from rulekit.channels import ChannelContext, ChannelTimer, Provider, Reply
from rulekit.channels.base import Inbound, account_digest
from rulekit.channels.session import LoopSession
from rulekit.errors import PermanentActionError, service_wait
from rulekit.event import Event
from rulekit.secrets import same_secret
from rulekit.store.base import State

from .botapi import BotAPI, BotAPIError, BotUnreachable, classify, is_lost_topic
from .normalize import TOPIC, Normalizer
from .settings import TelegramSettings
from .update import MAX_ID, parse_body, update_chat

if TYPE_CHECKING:
    import aiohttp

CLOSE_AFTER = "close_after"
"""The name of the idle timer (:meth:`TelegramProvider.channel_timers`)."""
ACTIVITY = frozenset({"created", "message", "reopened", "album_part"})
"""The events of a user's activity, which set the idle timer."""

SECRET_HEADER = "x-telegram-bot-api-secret-token"
"""The header Telegram sets on each webhook request to the ``secret_token`` it was given."""


class TelegramProvider(Provider):
    """A Telegram bot. Its default channel is ``telegram``.

    :meth:`parse` turns one ``Update`` (a webhook body, or one update of a ``getUpdates``
    answer) into normalized events (see :mod:`rulekit_telegram.normalize`); :meth:`send_reply`
    writes to the user's chat with ``sendMessage``. With ``updates: polling`` the daemon runs
    :meth:`fetch_updates` (see :mod:`rulekit_telegram.polling`).
    """

    name = "telegram-bot"
    default_channel = "telegram"
    description = "a Telegram bot: updates by webhook or long polling, replies by sendMessage"
    Settings = TelegramSettings
    can_reply = True
    max_reply_length = MAX_MESSAGE_LENGTH
    reply_limits = {
        "conversation": Limit(1, 1.0),  # about one message a second in one chat
        "service": Limit(30, 1.0),  # thirty a second for the whole bot
    }

    settings: TelegramSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        if not isinstance(self.settings, TelegramSettings):
            self.settings = TelegramSettings.model_validate(self.settings.model_dump())
        self.normalizer = Normalizer(self.channel, self.settings)
        self._sessions = LoopSession()
        self._floods: dict[str, float] = {}  # chat -> end of its flood-control window

    @property
    def service_account(self) -> str:
        """The bot: a digest of its token and the Bot API's base URL (Telegram's limits are
        per bot, so channels on one token share their pauses). Never the token itself;
        without one, the channel's name."""
        if self.settings.token is None:
            return self.channel
        return account_digest(self.name, self.settings.token, self.settings.base_url)

    # updates ---------------------------------------------------------------------------------
    def parse(self, body: bytes, state: State) -> list[Event]:
        """Turn one update into events; see :meth:`Provider.parse`."""
        return self.normalizer.events(parse_body(body), state)

    def channel_timers(self, event: Event) -> list[ChannelTimer]:
        """``close_after``: a user's activity (a new, reopened or edited message) sets the
        conversation's idle timer, due ``close_after`` after their last visit; the next
        activity moves it. (After the last visit, not the event's own time: a message written
        before the user's last one and delivered after it must not move the timer back.)"""
        if event.event not in ACTIVITY or not event.conversation.id:
            return []
        last = event.client.last_visit
        since = max(event.occurred_at, last) if last is not None else event.occurred_at
        due = since + self.settings.close_after
        return [ChannelTimer(CLOSE_AFTER, event.conversation.id, due)]

    def timer_due(self, timer: ChannelTimer, state: State) -> list[Event]:
        """The idle timer: the conversation is ``closed`` when its ``close_after`` ran out,
        on time (not only on the user's next update)."""
        if timer.name != CLOSE_AFTER:
            return []
        return self.normalizer.close_idle(timer.conversation_id, timer.due, state)

    def conversation_key(self, data: Any) -> str | None:
        """The private chat's id: a conversation's updates are processed in order."""
        chat = update_chat(data)
        return str(chat) if chat is not None else None

    def authorize_webhook(self, headers: Mapping[str, str]) -> bool:
        """Telegram repeats the ``webhook_secret`` in ``X-Telegram-Bot-Api-Secret-Token``."""
        secret = self.settings.webhook_secret
        expected = secret.get_secret_value() if secret is not None else ""
        return same_secret(headers.get(SECRET_HEADER, ""), expected)  # constant time

    def fetches_updates(self) -> bool:
        return self.settings.updates == "polling" and self.settings.token is not None

    async def fetch_updates(self, inbound: Inbound) -> None:
        """Long polling: see :class:`rulekit_telegram.polling.Poller`."""
        from .polling import Poller

        await Poller(self, inbound).run()

    # replies ---------------------------------------------------------------------------------
    def reply_problem(self) -> str | None:
        if self.settings.token is None:
            return f"channel {self.channel!r} needs the bot's token to send replies"
        return None

    def describe_reply(self, reply: Reply) -> str:
        chat = self.chat_of(reply) or "(no chat)"
        topic = self.topic_of(reply)
        where = f"{chat}, topic {topic}" if topic is not None else chat
        text = truncate(reply.text, None)
        cut = f" (truncated to {len(text)} characters)" if text != reply.text else ""
        return f"Telegram sendMessage to chat {where}{cut}: {text!r}"

    async def send_reply(self, reply: Reply, *, timeout: float) -> dict[str, Any]:
        if problem := self.reply_problem():
            raise PermanentActionError(problem)
        chat = self.chat_of(reply)
        if chat is None:
            raise PermanentActionError("the conversation has no Telegram chat to reply to")
        text = truncate(reply.text, None)
        params: dict[str, Any] = {"chat_id": int(chat), "text": text}
        topic = self.topic_of(reply)
        if topic is not None:
            params["message_thread_id"] = topic  # where the user wrote, not the main view
        try:
            try:
                sent = await self.api().call("sendMessage", params, timeout=timeout)
            except BotAPIError as exc:
                if topic is None or not is_lost_topic(exc):
                    raise
                # the user deleted the topic: the chat itself still reads the reply
                del params["message_thread_id"]
                sent = await self.api().call("sendMessage", params, timeout=timeout)
        except (BotAPIError, BotUnreachable) as exc:
            raise classify(exc, scope=self._flood_scope(chat, exc)) from None
        message_id = sent.get("message_id") if isinstance(sent, dict) else None
        return {"message_id": message_id, "chat_id": chat, "truncated": text != reply.text}

    @staticmethod
    def chat_of(reply: Reply) -> str | None:
        """The private chat a reply goes to: the conversation's chat (the user's id)."""
        for candidate in (reply.conversation.external_id, reply.client.id):
            if candidate and candidate.lstrip("-").isdigit() and len(candidate) <= 20:
                return candidate
        return None

    @staticmethod
    def topic_of(reply: Reply) -> int | None:
        """The topic of the chat the client last wrote in (see
        :mod:`rulekit_telegram.normalize`), or None: the chat's main view."""
        topic = reply.client.custom.get(TOPIC)
        if isinstance(topic, int) and not isinstance(topic, bool) and 0 < topic <= MAX_ID:
            return topic
        return None

    def _flood_scope(self, chat: str, exc: BotAPIError | BotUnreachable) -> str:
        """Telegram does not say what flood control throttles: one chat, unless two chats are
        throttled at once, which means the bot as a whole (then every reply pauses)."""
        if not isinstance(exc, BotAPIError) or exc.status != 429:
            return "destination"
        now = asyncio.get_running_loop().time()
        self._floods = {key: end for key, end in self._floods.items() if end > now}
        others = [key for key in self._floods if key != chat]
        # the pause as the dispatcher keeps it (an hour at most): a wait of years would make
        # every later flood control of another chat count as the whole bot's
        self._floods[chat] = now + (service_wait(exc.retry_after) or 1.0)
        return "service" if others else "destination"

    # the Bot API -----------------------------------------------------------------------------
    def api(self) -> BotAPI:
        """The Bot API client for this channel's token (check :meth:`reply_problem` first). Its
        HTTP connections are kept between the calls made in one event loop."""
        assert self.settings.token is not None
        return BotAPI(self.settings.base_url, self.settings.token, session=self._session())

    def _session(self) -> aiohttp.ClientSession | None:
        return self._sessions.get()

    async def aclose(self) -> None:
        """Close the HTTP connections kept between calls."""
        await self._sessions.aclose()
