"""Telegram ``Update`` bodies as the Bot API sends them, for tests: a user writing to a bot.

:class:`TelegramUser` is a person; :class:`Updates` numbers updates and messages the way
Telegram does (one ``update_id`` sequence per bot, ``message_id`` per chat)::

    updates = Updates()
    ann = TelegramUser(111, "Ann", username="ann", language_code="en")
    first = updates.message(ann, "Hi")
    photo = updates.message(ann, kind="photo", caption="the broken part")
    fixed = updates.edit(first, "Hi!")
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

MEDIA: dict[str, Any] = {
    "photo": [
        {"file_id": "AgACAgIAAxkBAAIB", "file_unique_id": "AQADs", "width": 90, "height": 67},
        {"file_id": "AgACAgIAAxkBAAIC", "file_unique_id": "AQADt", "width": 800, "height": 600},
    ],
    "sticker": {
        "file_id": "CAACAgIAAxkBAAID",
        "file_unique_id": "AgADs",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "👍",
    },
    "document": {"file_id": "BQACAgIAAxkBAAIE", "file_unique_id": "AgADu", "file_name": "a.pdf"},
    "voice": {"file_id": "AwACAgIAAxkBAAIF", "file_unique_id": "AgADv", "duration": 3},
    "video": {
        "file_id": "BAACAgIAAxkBAAIG",
        "file_unique_id": "AgADw",
        "width": 640,
        "height": 360,
        "duration": 7,
    },
    "location": {"latitude": 52.52, "longitude": 13.405},
}
"""A payload for each kind of message (``location`` stands for what rulekit calls ``other``)."""


@dataclass(frozen=True)
class TelegramUser:
    """A Telegram user: their private chat with a bot has the same id."""

    id: int
    first_name: str = "Ann"
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``User`` object (``from``)."""
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                user[key] = getattr(self, key)
        return user

    def chat(self) -> dict[str, Any]:
        """The private ``Chat`` with the bot."""
        chat: dict[str, Any] = {"id": self.id, "type": "private", "first_name": self.first_name}
        if self.username is not None:
            chat["username"] = self.username
        return chat


class Updates:
    """Makes updates, numbered as one bot's."""

    def __init__(self, first_update_id: int = 100_000, date: int = 1_764_460_800) -> None:
        self._update_ids = itertools.count(first_update_id)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self.date = date
        """The next message's date (Unix seconds); each message is a second after the last."""

    def message(
        self,
        user: TelegramUser,
        text: str | None = None,
        *,
        kind: str = "text",
        caption: str | None = None,
        topic: int | None = None,
        album: str | None = None,
    ) -> dict[str, Any]:
        """An update with a new message from ``user``: ``text``, or a message of ``kind``
        (``photo``, ``sticker``, ``document``, ``voice``, ``video``, ``location``), written
        in ``topic`` of the chat (its ``message_thread_id``) or outside topics, as a part of
        ``album`` (its ``media_group_id``) or alone."""
        message = self._next_message(user)
        if kind == "text":
            message["text"] = text if text is not None else ""
            if message["text"].startswith("/"):
                command = message["text"].split()[0]
                message["entities"] = [{"offset": 0, "length": len(command), "type": "bot_command"}]
        else:
            message[kind] = MEDIA[kind]
            if caption is not None:
                message["caption"] = caption
        if topic is not None:
            message.update(message_thread_id=topic, is_topic_message=True)
        if album is not None:
            message["media_group_id"] = album
        return {"update_id": next(self._update_ids), "message": message}

    def service(self, user: TelegramUser, key: str, value: Any = True) -> dict[str, Any]:
        """An update with a service message from ``user`` in their chat with the bot (the
        message's ``key`` says what happened: ``pinned_message``, ``write_access_allowed``...)."""
        message = self._next_message(user)
        message[key] = value
        return {"update_id": next(self._update_ids), "message": message}

    def _next_message(self, user: TelegramUser) -> dict[str, Any]:
        """The head of ``user``'s next message in their chat with the bot: its number in the
        chat, the sender, the chat, and a time one second after the last message's."""
        counter = self._message_ids.setdefault(user.id, itertools.count(1))
        self.date += 1
        return {
            "message_id": next(counter),
            "from": user.as_json(),
            "chat": user.chat(),
            "date": self.date,
        }

    def edit(self, update: dict[str, Any], text: str) -> dict[str, Any]:
        """An update saying the message of ``update`` was edited to ``text``."""
        self.date += 1
        message = {**update["message"], "text": text, "edit_date": self.date}
        return {"update_id": next(self._update_ids), "edited_message": message}

    def other(self, user: TelegramUser) -> dict[str, Any]:
        """An update rulekit has no use for (the user pressed an inline button)."""
        query = {"id": "4382", "from": user.as_json(), "chat_instance": "-1", "data": "yes"}
        return {"update_id": next(self._update_ids), "callback_query": query}
