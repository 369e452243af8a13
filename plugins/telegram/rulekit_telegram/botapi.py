"""A small client of the Telegram Bot API: the methods the channel needs (``sendMessage``,
``getUpdates``, ``setWebhook``), with raw JSON answers.

Raw, because a polled update is kept in the inbox exactly as Telegram sent it, and because the
answers rulekit needs are two fields; python-telegram-bot's objects would cost its import and a
round trip through its types for nothing. The token is part of every URL: errors never show it.

:func:`classify` turns a failed call into what the dispatcher needs: flood control (429, with
Telegram's ``retry_after``), server errors, timeouts and lost connections are worth retrying;
a user who blocked the bot, an unknown chat or a rejected token are permanent, and say so.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from rulekit.actions.answers import (
    AnswerTooLarge,
    answer_status,
    bounded_response_class,
    forget_answer,
    unreadable,
)
from rulekit.errors import ActionError, PermanentActionError, RetryableActionError

if TYPE_CHECKING:
    import aiohttp

MAX_DETAIL = 300
"""How much of Telegram's description of a failure is kept."""


class BotAPIError(Exception):
    """The Bot API answered a call with ``ok: false`` (or not with its JSON at all)."""

    def __init__(
        self,
        status: int,
        description: str,
        *,
        retry_after: float | None = None,
        too_large: bool = False,
        head: bytes = b"",
    ) -> None:
        super().__init__(f"Telegram (HTTP {status}): {description}")
        self.status = status
        self.description = description
        self.retry_after = retry_after
        self.too_large = too_large
        """The answer was over :data:`~rulekit.actions.answers.MAX_ANSWER` bytes, not read."""
        self.head = head
        """The beginning of an answer over the bound (at most
        :data:`~rulekit.actions.answers.HEAD` bytes), or nothing."""


class BotUnreachable(Exception):
    """No answer: a timeout or a connection error (the message never shows the token)."""


class BotAPI:
    """The Bot API at ``base_url`` for the bot with ``token``."""

    def __init__(
        self, base_url: str, token: SecretStr, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._session = session
        """A session kept between calls (its connections are reused); None: one per call."""

    def __repr__(self) -> str:
        return f"BotAPI({self.base_url!r})"

    async def call(self, method: str, params: dict[str, Any], *, timeout: float) -> Any:
        """Call ``method`` with ``params`` (sent as JSON); return the answer's ``result``.

        Raises :class:`BotAPIError` for a refusal and :class:`BotUnreachable` for no answer.
        """
        import aiohttp  # here, not at the top: `rulekit check` and `test` load this module

        url = f"{self.base_url}/bot{self._token.get_secret_value()}/{method}"
        forget_answer()
        try:
            if self._session is not None:
                status, content = await _post(self._session, url, params, timeout)
            else:
                async with aiohttp.ClientSession(
                    response_class=bounded_response_class()
                ) as session:
                    status, content = await _post(session, url, params, timeout)
        except TimeoutError:
            message = f"Telegram did not answer within {timeout:g} s"
            raise self._lost(message) or BotUnreachable(message) from None
        except AnswerTooLarge as exc:  # classified by its status, as any refusal
            raise BotAPIError(exc.status, str(exc), too_large=True, head=exc.head) from None
        except aiohttp.ClientError as exc:
            detail = self.scrub(str(exc) or type(exc).__name__)
            message = f"cannot reach Telegram at {self.base_url}: {detail}"
            raise self._lost(message) or BotUnreachable(message) from None
        return self._result(status, content)

    @staticmethod
    def _lost(message: str) -> BotAPIError | None:
        """A failure after the answer's head came: a refusal of its status (a 2xx: the call
        was taken, see :func:`classify`); None when no answer came."""
        status = answer_status()
        if status is None:
            return None
        return BotAPIError(status, f"{message} (the answer, HTTP {status}, did not come whole)")

    def _result(self, status: int, content: bytes) -> Any:
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # (nested past the parser: not an answer)
            data = None
        if not isinstance(data, dict):
            text = content.decode("utf-8", "replace")
            raise BotAPIError(status, _one_line(self.scrub(text)) or "no JSON in the answer")
        if data.get("ok") is True and 200 <= status < 300:
            return data.get("result")
        description = data.get("description")
        text = description if isinstance(description, str) else f"error {data.get('error_code')}"
        parameters = data.get("parameters")
        wait = parameters.get("retry_after") if isinstance(parameters, dict) else None
        retry_after = None
        if isinstance(wait, int | float) and not isinstance(wait, bool) and math.isfinite(wait):
            retry_after = max(0.0, float(wait))
        code = data.get("error_code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
            status = code  # Telegram's own code; the HTTP status is the same for the real API
        raise BotAPIError(max(status, 400), _one_line(self.scrub(text)), retry_after=retry_after)

    def scrub(self, text: str) -> str:
        """``text`` without the token (an error may quote the URL)."""
        token = self._token.get_secret_value()
        return text.replace(token, "**********") if token else text


async def _post(
    session: aiohttp.ClientSession, url: str, params: dict[str, Any], timeout: float
) -> tuple[int, bytes]:
    import aiohttp

    async with session.post(
        url, json=params, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as answer:
        return answer.status, await answer.read()


BLOCKED_MARKS: tuple[str, ...] = (
    "bot was blocked by the user",
    "user is deactivated",
    "bot can't initiate conversation",
)
"""What Telegram says when a user cannot be written to any more."""


def is_lost_topic(exc: BotAPIError) -> bool:
    """Whether Telegram refused a message because its topic is gone (deleted by the user)."""
    return exc.status == 400 and "thread not found" in exc.description.lower()


def classify(exc: BotAPIError | BotUnreachable, *, scope: str = "destination") -> ActionError:
    """The dispatcher's error for a failed ``sendMessage``; a 429 pauses ``scope``."""
    if isinstance(exc, BotUnreachable):
        return RetryableActionError(str(exc))
    status, said = exc.status, exc.description
    if 200 <= status < 300:  # Telegram took the call; only its answer was lost
        return unreadable(f"Telegram: {said}", status)
    if status == 429:
        wait = exc.retry_after
        hint = f" (flood control: retry after {wait:g} s)" if wait is not None else ""
        return RetryableActionError(
            f"Telegram is limiting the bot (HTTP 429): {said}{hint}",
            retry_after=wait,
            scope=scope,
            status=status,
        )
    if status >= 500 or status == 408:  # (a 408: a proxy's, the request came too slowly)
        return RetryableActionError(f"Telegram failed (HTTP {status}): {said}", status=status)
    if status == 401 or status == 404:
        return PermanentActionError(
            f"Telegram rejected the bot token (HTTP {status}): {said}", status=status
        )
    lowered = said.lower()
    if status == 403 and any(mark in lowered for mark in BLOCKED_MARKS):
        return PermanentActionError(
            f"the user blocked the bot or left Telegram; nothing can be sent to them "
            f"(HTTP 403: {said})",
            status=status,
        )
    return PermanentActionError(
        f"Telegram refused the message (HTTP {status}): {said}", status=status
    )


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."
