"""A fake Telegram Bot API: ``getMe`` and ``sendMessage``, on a real loopback server.

Point python-telegram-bot at it with ``Bot(token, base_url=fake.base_url)``: requests arrive
as ``/bot<token>/<method>``. An unknown token gets 401 like the real API; chats are all known
unless ``chats`` is given (then others are "chat not found"). Every request is recorded, and
the next calls can be told to fail::

    with FakeTelegram(token="123:secret") as telegram:
        telegram.flood(retry_after=2, chat="-100")   # flood control for that chat's next message
        telegram.server_error()                      # 500 for the next message
        telegram.hang(5)                             # the next message answers after 5 s
        ...
        [(m.chat_id, m.text) for m in telegram.messages()]
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rulekit.testing.fakehttp import FakeService, RecordedRequest, Response

BOT_USER = {
    "id": 4242,
    "is_bot": True,
    "first_name": "rulekit",
    "username": "rulekit_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}


@dataclass(frozen=True)
class TelegramMessage:
    """A ``sendMessage`` call the fake received (accepted or not)."""

    chat_id: str
    text: str
    parse_mode: str | None
    at: float
    status: int
    request: RecordedRequest


def error(code: int, description: str, **parameters: Any) -> Response:
    """A Bot API error answer (``{"ok": false, "error_code": ..., "description": ...}``)."""
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response(code, body)


class FakeTelegram:
    """A recording fake of the Telegram Bot API on 127.0.0.1."""

    def __init__(
        self, token: str = "123456:fake-telegram-token", chats: Iterable[str] | None = None
    ):
        self.token = token
        self.chats = {str(c) for c in chats} if chats is not None else None
        self.service = FakeService(self._respond)
        self._failures: list[tuple[str, str | None, Response]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._statuses: dict[int, int] = {}

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeTelegram:
        self.service.start()
        return self

    def stop(self) -> None:
        self.service.stop()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot as ``base_url`` (the token follows it)."""
        return f"{self.service.base_url}/bot"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.service.requests

    # scripting -------------------------------------------------------------------------------
    def fail(
        self,
        response: Response,
        *,
        method: str = "sendMessage",
        chat: str | int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (to ``chat``, or any) with ``response``."""
        with self._lock:
            key = None if chat is None else str(chat)
            self._failures.extend([(method, key, response)] * times)

    def flood(self, retry_after: int = 1, *, chat: str | int | None = None, **kwargs: Any) -> None:
        """Flood control: 429 with ``parameters.retry_after``, as Telegram answers."""
        self.fail(
            error(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after),
            chat=chat,
            **kwargs,
        )

    def server_error(self, status: int = 500, *, chat: str | int | None = None) -> None:
        self.fail(error(status, "Internal Server Error"), chat=chat)

    def hang(self, seconds: float, *, chat: str | int | None = None, **kwargs: Any) -> None:
        """Answer the next call only after ``seconds`` (a client with a timeout gives up)."""
        self.fail(Response(200, {"ok": True, "result": True}, delay=seconds), chat=chat, **kwargs)

    # reading ---------------------------------------------------------------------------------
    def calls(self, method: str) -> list[RecordedRequest]:
        """Requests for one Bot API method, in order."""
        return [r for r in list(self.service.requests) if self._method(r)[1] == method]

    def messages(
        self, chat: str | int | None = None, *, accepted: bool | None = None
    ) -> list[TelegramMessage]:
        """The ``sendMessage`` calls received, in order (for one chat if given)."""
        out: list[TelegramMessage] = []
        for request in self.calls("sendMessage"):
            data = request.data
            status = self._statuses.get(id(request), 0)
            message = TelegramMessage(
                str(data.get("chat_id")),
                data.get("text") or "",
                data.get("parse_mode"),
                request.at,
                status,
                request,
            )
            if chat is not None and message.chat_id != str(chat):
                continue
            if accepted is not None and (status == 200) != accepted:
                continue
            out.append(message)
        return out

    # answering -------------------------------------------------------------------------------
    @staticmethod
    def _method(request: RecordedRequest) -> tuple[str, str]:
        path = urlsplit(request.path).path
        token, _, method = path.removeprefix("/bot").partition("/")
        return token, method

    def _respond(self, request: RecordedRequest) -> Response:
        response = self._decide(request)
        with self._lock:
            self._statuses[id(request)] = response.status
        return response

    def _decide(self, request: RecordedRequest) -> Response:
        token, method = self._method(request)
        if token != self.token:
            return error(401, "Unauthorized")
        data = request.data
        chat = str(data.get("chat_id")) if data.get("chat_id") is not None else None
        with self._lock:
            for index, (only_method, only_chat, response) in enumerate(self._failures):
                if only_method == method and only_chat in (None, chat):
                    del self._failures[index]
                    return response
        if method == "getMe":
            return Response(200, {"ok": True, "result": BOT_USER})
        if method != "sendMessage":
            return error(404, "Not Found: method not found")
        if chat is None or (self.chats is not None and chat not in self.chats):
            return error(400, "Bad Request: chat not found")
        text = data.get("text") or ""
        if not text:
            return error(400, "Bad Request: message text is empty")
        if len(text.encode("utf-16-le")) // 2 > 4096:
            return error(400, "Bad Request: message is too long")
        chat_type = "group" if chat.startswith(("-", "@")) else "private"
        chat_id = int(chat) if chat.lstrip("-").isdigit() else -1001234567890  # an @username
        result = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": chat_type, "title": "chat"},
            "from": {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")},
            "text": text,
        }
        return Response(200, {"ok": True, "result": result})
