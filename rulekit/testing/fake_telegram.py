"""A fake Telegram Bot API on a real loopback server: ``getMe`` and ``sendMessage``, and the
bot's side of users writing to it: ``getUpdates``, ``setWebhook`` and ``deleteWebhook``.

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

Users write to the bot with :meth:`FakeTelegram.write` (an update from
:mod:`rulekit.testing.telegram_updates`): it waits for ``getUpdates`` like Telegram (until an
offset past it acknowledges it) and, while a webhook is set, is also posted to the webhook with
its secret token header (:meth:`FakeTelegram.deliver` posts one update again). A user who
blocked the bot (:meth:`FakeTelegram.block`) cannot be written to (403); a group upgraded to
a supergroup (:meth:`FakeTelegram.migrate`) answers 400 with ``migrate_to_chat_id`` for ever,
and so does a topic of a private chat its user deleted (:meth:`FakeTelegram.delete_topic`).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
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
        self._updates: list[dict[str, Any]] = []  # unacknowledged, oldest first
        self._arrived = threading.Condition(self._lock)
        self.webhook: dict[str, Any] | None = None
        """What the last ``setWebhook`` set (its JSON fields), None while there is none."""
        self.blocked: set[str] = set()
        self.migrated: dict[str, int] = {}
        self.deleted_topics: set[tuple[str, int]] = set()
        """Topics of private chats their users deleted: (chat id, message_thread_id)."""
        """Groups upgraded to supergroups: old chat id -> the supergroup's id."""

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeTelegram:
        self.service.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._arrived.notify_all()
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

    def block(self, user: int | str) -> None:
        """The user blocked the bot: messages to their chat get 403."""
        with self._lock:
            self.blocked.add(str(user))

    def migrate(self, group: int | str, supergroup: int) -> None:
        """The group became a supergroup with a new id: messages to the old id are refused
        (400, ``parameters.migrate_to_chat_id``), as Telegram refuses them, for ever."""
        with self._lock:
            self.migrated[str(group)] = supergroup

    def delete_topic(self, chat: int | str, topic: int) -> None:
        """The user deleted a topic of their chat: messages to it are refused (400)."""
        with self._lock:
            self.deleted_topics.add((str(chat), topic))

    # users writing ---------------------------------------------------------------------------
    def write(self, update: dict[str, Any]) -> int | None:
        """A user's update for the bot: kept for ``getUpdates`` until acknowledged, and posted
        to the webhook while one is set (then the webhook's HTTP status is returned)."""
        with self._lock:
            self._updates.append(update)
            self._arrived.notify_all()
            hook = self.webhook
        return self.deliver(update) if hook is not None else None

    def deliver(self, update: dict[str, Any], *, secret_token: str | None = None) -> int:
        """Post ``update`` to the webhook as Telegram does (``secret_token`` overrides the
        header set by ``setWebhook``; "" leaves it out); the HTTP status of the answer."""
        hook = self.webhook
        assert hook is not None, "no webhook is set"
        token = hook.get("secret_token") if secret_token is None else secret_token
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = token
        body = json.dumps(update, ensure_ascii=False).encode()
        url = urlsplit(hook["url"])
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        try:
            connection.putrequest("POST", url.path + (f"?{url.query}" if url.query else ""))
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                connection.putheader(name, value)
            connection.endheaders()
            # answered before the body was read (a body over the limit): the answer is read
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.send(body)
            with connection.getresponse() as answer:
                answer.read()
                return int(answer.status)
        finally:
            connection.close()

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Updates not acknowledged by a ``getUpdates`` offset yet."""
        with self._lock:
            return list(self._updates)

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
        if method == "getUpdates":
            return self._get_updates(data)
        if method in ("setWebhook", "deleteWebhook"):
            return self._set_webhook(method, data)
        if method != "sendMessage":
            return error(404, "Not Found: method not found")
        if chat is None or (self.chats is not None and chat not in self.chats):
            return error(400, "Bad Request: chat not found")
        if chat in self.migrated:
            return error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                migrate_to_chat_id=self.migrated[chat],
            )
        if chat in self.blocked:
            return error(403, "Forbidden: bot was blocked by the user")
        topic = data.get("message_thread_id")
        if (chat, topic) in self.deleted_topics:
            return error(400, "Bad Request: message thread not found")
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
        if isinstance(topic, int):
            result.update(message_thread_id=topic, is_topic_message=True)
        return Response(200, {"ok": True, "result": result})

    def _get_updates(self, data: dict[str, Any]) -> Response:
        offset, timeout, limit = (
            _number(data.get(key), default)
            for key, default in (("offset", 0), ("timeout", 0), ("limit", 100))
        )
        deadline = time.monotonic() + min(timeout, 50)
        with self._lock:
            if self.webhook is not None:
                return error(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if offset:  # acknowledges every update before it
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self.service._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(min(left, 0.1))
            batch = self._updates[: max(1, min(limit, 100))]
        return Response(200, {"ok": True, "result": batch})

    def _set_webhook(self, method: str, data: dict[str, Any]) -> Response:
        with self._lock:
            if method == "deleteWebhook":
                self.webhook = None
                return Response(
                    200, {"ok": True, "result": True, "description": "Webhook was deleted"}
                )
            url = data.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                return error(
                    400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                )
            self.webhook = dict(data)
            self._arrived.notify_all()
        return Response(200, {"ok": True, "result": True, "description": "Webhook was set"})


def _number(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default
