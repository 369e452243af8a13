"""``telegram``: send a message to a Telegram chat (``sendMessage``), through
python-telegram-bot's :class:`telegram.Bot`.

One bot per action instance, initialized once (its ``getMe`` checks the token). The token is
part of every Bot API URL; it is put into the URL only by the HTTP transport, at the last
moment, so that HTTP logs, error messages and reprs never show it.

A group upgraded to a supergroup gets a new id, and Telegram refuses the old one for ever,
saying the new one: the message follows it, and so do later ones (the outcome says
``migrated_from``, for the admin to update the rule).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator

from rulekit.actions.answers import unreadable
from rulekit.actions.base import Action, ActionContext
from rulekit.actions.pacing import Limit, Pace
from rulekit.actions.telegram_markup import resolve_html, resolve_markdown_v2
from rulekit.actions.telegram_text import MAX_MESSAGE_LENGTH, truncate
from rulekit.actions.telegram_transport import (
    TOKEN_MARK,
    flood_wait,
    header_wait,
    last_status,
    token_transport,
)
from rulekit.errors import (
    MAX_RETRY_AFTER,
    ActionError,
    PermanentActionError,
    RetryableActionError,
    service_wait,
)
from rulekit.escapes import (
    escape_html,
    escape_markdown_v2,
    escape_markdown_v2_code,
    escape_markdown_v2_url,
)
from rulekit.expr.markup import Interpolations, map_leaves
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.secrets import redact

if TYPE_CHECKING:
    from telegram import Bot

__all__ = [
    "Telegram",
    "TelegramIntegration",
    "TelegramParams",
    "escape_html",  # the escapers live in telegram_markup; importable from here too
    "escape_markdown_v2",
    "escape_markdown_v2_code",
    "escape_markdown_v2_url",
    "is_group_chat",
]


def _plain(values: Interpolations, text: str) -> str:
    return values.plain_text(text)


_RESOLVERS = {"HTML": resolve_html, "MarkdownV2": resolve_markdown_v2}


class TelegramIntegration(StrictModel):
    token: SecretStr | None = Field(None, description="The bot token from @BotFather, from ${ENV}.")
    base_url: str = Field(
        "https://api.telegram.org/bot",
        description="The Bot API's base URL; the token follows it (or replaces {token}).",
    )


def _not_empty(schema: dict[str, Any]) -> None:
    """``chat_id``'s JSON Schema: a text one is not empty (the loader refuses it)."""
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "string":
            branch["minLength"] = 1


class TelegramParams(StrictModel):
    chat_id: str | int = Field(
        description="A chat id, or @channelusername.",
        json_schema_extra=lambda schema: _not_empty(schema),
    )
    text: str = Field(min_length=1, description="The message (over 4096 characters: truncated).")
    parse_mode: Literal["none", "HTML", "MarkdownV2"] = Field(
        "none", description="none (plain text), HTML or MarkdownV2."
    )
    message_thread_id: int | None = Field(
        None,
        gt=0,
        description="A topic of a forum supergroup (its message_thread_id); none: General.",
    )

    @field_validator("chat_id")
    @classmethod
    def _not_empty(cls, value: str | int) -> str | int:
        # a template that rendered nothing is refused as the plan is made, as an empty text
        # is: Telegram would only refuse the call
        if isinstance(value, str) and not value.strip():
            raise ValueError("the chat id is empty")
        return value


def is_group_chat(chat_id: str | int) -> bool:
    """Groups, supergroups and channels have negative ids (or an @username)."""
    chat = str(chat_id).strip()
    return chat.startswith(("-", "@"))


class Telegram(Action):
    name = "telegram"
    description = "send a message to a Telegram chat"
    Params = TelegramParams
    integration = "telegram"
    Integration = TelegramIntegration
    markup = True
    read_by_people = True
    limits = {
        "chat": Limit(1, 1.0),  # about one message a second in one chat
        "group": Limit(20, 60.0),  # twenty a minute in a group
        "bot": Limit(30, 1.0),  # thirty a second for the whole bot
    }
    connections = 64
    """Connections the bot keeps open to the Bot API."""

    def __init__(self, settings: Any = None, **options: Any) -> None:
        super().__init__(settings, **options)
        self._bot: Bot | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._floods: dict[str, float] = {}  # chat -> end of its flood-control window
        self._migrations: dict[str, int] = {}  # a group's id -> its supergroup's (see execute)

    @classmethod
    def escape(cls, values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
        """``text`` read in its (rendered) ``parse_mode`` (see
        :mod:`rulekit.actions.telegram_markup`); the other parameters as they are."""
        out = {k: map_leaves(v, values.plain_text) for k, v in params.items() if k != "text"}
        resolve = _RESOLVERS.get(str(out.get("parse_mode")), _plain)
        if "text" in params:
            text = params["text"]
            out["text"] = resolve(values, text) if isinstance(text, str) else text
        return out

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if self.settings is None:
            return "Telegram is not configured"
        if not self._token():
            return "the Telegram token is empty"
        return None

    def destination(self, params: TelegramParams) -> str:  # type: ignore[override]
        return f"telegram:{params.chat_id}"

    def pacing(self, params: TelegramParams) -> list[Pace]:  # type: ignore[override]
        chat = self.destination(params)
        paces = [Pace(chat, self.limits["chat"])]
        if is_group_chat(params.chat_id):
            paces.append(Pace(f"{chat}:minute", self.limits["group"]))
        paces.append(Pace("telegram", self.limits["bot"], scope="service"))
        return paces

    def describe(self, params: TelegramParams, context: ActionContext) -> str:  # type: ignore[override]
        mode = "" if params.parse_mode == "none" else f" ({params.parse_mode})"
        text = self._text(params)
        cut = f" (truncated to {MAX_MESSAGE_LENGTH} characters)" if text != params.text else ""
        topic = f", topic {params.message_thread_id}" if params.message_thread_id else ""
        return f"send Telegram message to chat {params.chat_id}{topic}{mode}{cut}: {text!r}"

    # execution -----------------------------------------------------------------------------
    async def execute(self, params: TelegramParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        from telegram.error import ChatMigrated, TelegramError

        problem = self.unavailable()
        if problem:
            raise PermanentActionError(problem)
        text = self._text(params)
        parse_mode = None if params.parse_mode == "none" else params.parse_mode
        configured = str(params.chat_id).strip()
        chat: str | int = self._migrations.get(configured, params.chat_id)
        last_status.set(None)
        sending = False  # the message's call has started (getMe, before it, sends nothing)
        try:
            async with asyncio.timeout(self.timeout):
                bot = await self._ready_bot()
                topic = params.message_thread_id
                sending = True
                try:
                    message = await bot.send_message(
                        chat_id=chat, text=text, parse_mode=parse_mode, message_thread_id=topic
                    )
                except ChatMigrated as moved:
                    # The group became a supergroup, with a new id for good; Telegram refuses
                    # the old one for ever and says the new one: follow it (once), and keep
                    # following it, so that the configured id goes on working.
                    chat = int(moved.new_chat_id)
                    self._migrations[configured] = chat
                    message = await bot.send_message(
                        chat_id=chat, text=text, parse_mode=parse_mode, message_thread_id=topic
                    )
                result: dict[str, Any] = {
                    "message_id": message.message_id,
                    "chat_id": message.chat.id,
                    "truncated": text != params.text,
                }
        except TimeoutError:
            late = f"Telegram did not answer within {self.timeout:g} s"
            status = last_status.get()
            if status is not None and sending:  # the answer's head came: the rest did not
                raise unreadable(
                    f"{late} (the answer, HTTP {status}, did not come whole)", status
                ) from None
            raise RetryableActionError(late) from None
        except TelegramError as exc:
            raise self._classify(exc, str(params.chat_id)) from None
        except Exception as exc:
            error = self._unreadable(exc, str(params.chat_id), sending)
            if error is None:
                raise  # no answer behind it: a bug, which the dispatcher reports as one
            raise error from None
        if chat is not params.chat_id:
            # said in the outcome, so that the admin can put the new id in the rule
            result["migrated_from"] = params.chat_id
        return result

    def _unreadable(self, exc: Exception, chat: str, sending: bool) -> ActionError | None:
        """The error of an answer python-telegram-bot could not read (not the Bot API's: a
        proxy's, a fault's; a flood-control wait too long to hold), by its status, as for any
        unreadable answer: a 2xx to the message's call is final (Telegram took it: another
        attempt would send it twice). None when no answer came (a bug before the call).
        What the answer held is not quoted: it may echo the message."""
        status = last_status.get()
        if status is None:
            return None
        what = f"Telegram: an answer that could not be read (HTTP {status}, {type(exc).__name__})"
        if status == 429:
            # a wait too long to count (python-telegram-bot overflows) asks for the longest
            wait = MAX_RETRY_AFTER if isinstance(exc, OverflowError) else header_wait()
            scope = self._flood_scope(chat, wait or 0.0)
            return RetryableActionError(what, retry_after=wait, scope=scope, status=429)
        if not sending and 200 <= status < 300:
            return RetryableActionError(what, status=status)  # getMe's: nothing was sent
        return unreadable(what, status)

    async def aclose(self) -> None:
        bot, self._bot = self._bot, None
        if bot is not None:
            await bot.shutdown()

    def _token(self) -> str:
        token = getattr(self.settings, "token", None)
        return token.get_secret_value() if token is not None else ""

    def _text(self, params: TelegramParams) -> str:
        mode = None if params.parse_mode == "none" else params.parse_mode
        return truncate(params.text, mode)

    async def _ready_bot(self) -> Bot:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            # a new event loop (a test's asyncio.run): the old bot's connections died with its loop
            self._loop, self._lock, self._bot = loop, asyncio.Lock(), None
        async with self._lock:
            if self._bot is None:
                bot = self._new_bot()
                try:
                    await bot.initialize()
                except BaseException:
                    await bot.shutdown()
                    raise
                self._bot = bot
        return self._bot

    def _new_bot(self) -> Bot:
        from telegram import Bot
        from telegram.request import HTTPXRequest

        # Opt in to python-telegram-bot's coming durations-as-timedelta (v22.2+): without it,
        # the library warns from inside its own RetryAfter, on every flood-control answer.
        os.environ.setdefault("PTB_TIMEDELTA", "true")

        token = self._token()
        base_url = self.settings.base_url  # type: ignore[union-attr]
        marked = (
            base_url.replace("{token}", TOKEN_MARK)
            if "{token}" in base_url
            else base_url + TOKEN_MARK
        )

        def request(connections: int) -> HTTPXRequest:
            timeout = self.timeout
            return HTTPXRequest(
                connection_pool_size=connections,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
                httpx_kwargs={"transport": token_transport(token, connections)},
            )

        return Bot(
            token,
            base_url=lambda _token: marked,
            base_file_url=lambda _token: marked,
            request=request(self.connections),
            get_updates_request=request(1),
        )

    def _classify(self, exc: Exception, chat: str) -> ActionError:
        from telegram import error as tg

        status = last_status.get()
        message = redact(f"Telegram: {exc}", [self._token()])
        if isinstance(exc, tg.RetryAfter):
            seconds = flood_wait(exc)
            said = f": retry after {seconds:g} s" if seconds is not None else ""
            return RetryableActionError(
                f"{message} (flood control{said})",
                retry_after=seconds,
                scope=self._flood_scope(chat, seconds or 0.0),
                status=429,
            )
        if isinstance(exc, tg.ChatMigrated):
            # migrated again while being followed: no end of moving is worth another attempt
            return PermanentActionError(
                f"{message} (the group became supergroup {exc.new_chat_id}: set its id in the "
                "rule)",
                status=status,
            )
        if isinstance(exc, tg.InvalidToken | tg.Forbidden | tg.BadRequest | tg.Conflict):
            return PermanentActionError(message, status=status)
        if status is not None and 200 <= status < 300:
            # Telegram took the call, and what garbled its answer (or kept its end from coming
            # in time) cannot unsend the message: another attempt would send it twice
            return PermanentActionError(
                f"{message} (HTTP {status}: the message may have been sent; not retried, so "
                "as not to send it twice)",
                status=status,
            )
        if isinstance(exc, tg.TimedOut):
            return RetryableActionError(message, status=status)
        wait = header_wait() if status is not None and (status == 429 or status >= 500) else None
        if isinstance(exc, tg.NetworkError) and wait:
            # not the Bot API's flood control (no parameters: a proxy's 429, a 503 in
            # maintenance), with its wait in a Retry-After header
            scope = self._flood_scope(chat, wait or 0.0) if status == 429 else "service"
            return RetryableActionError(
                f"{message} (retry after {wait:g} s)", retry_after=wait, scope=scope, status=status
            )
        if isinstance(exc, tg.NetworkError):
            # 5xx and lost connections come here, and so do 4xx the library has no class for,
            # and redirects (not followed: the message goes only where the config says)
            # (a 408 is a proxy's "the request came too slowly": another attempt may go)
            if status is not None and 300 <= status < 500 and status not in (408, 429):
                return PermanentActionError(message, status=status)
            return RetryableActionError(message, status=status)
        return RetryableActionError(message, status=status)  # a garbled answer

    def _flood_scope(self, chat: str, seconds: float) -> str:
        """Telegram does not say what a flood-control answer throttles. Two chats throttled at
        once, or a throttled ``getMe``, mean the bot as a whole: then every chat pauses."""
        now = asyncio.get_running_loop().time()
        self._floods = {key: end for key, end in self._floods.items() if end > now}
        others = [key for key in self._floods if key != chat]
        # the pause as the dispatcher keeps it (an hour at most): a wait of years would make
        # every later flood control of another chat count as the whole bot's
        self._floods[chat] = now + (service_wait(seconds) or 0.0)
        bot_wide = bool(others) or self._bot is None
        return "service" if bot_wide else "destination"


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Telegram)
