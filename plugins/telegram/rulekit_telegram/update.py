"""Telegram's ``Update`` objects, read tolerantly into plain dataclasses.

The Bot API documents its objects exactly, so the reader checks what rulekit relies on and no
more:

* required: a JSON object with an integer ``update_id``; when it carries a ``message`` or an
  ``edited_message``, that is an object with an integer ``message_id`` and a ``chat`` object
  with an integer ``id``; in a private chat, a ``from`` object with an integer ``id``;
* optional: everything else. A missing optional field, or one of an unexpected type, reads as
  None: a user's odd name must not cost the message it came with;
* not for rulekit: updates of other kinds (button presses, membership changes, ...), messages
  in groups and channels, messages from bots, and service messages (:data:`SERVICE_KEYS`: a
  message pinned, the auto-delete timer set, a payment made, a topic created...) read as an
  update without a message. A support bot talks to each user in the private chat they opened,
  and a service message says what happened in the chat, not what the user wrote. Nor is an
  edit of a location: it is a live location moving.

Anything that breaks a requirement raises :class:`rulekit.errors.ChannelError` with a one-line
message saying what is wrong; no other exception escapes :func:`parse_body`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from rulekit.channels.body import EARLIEST_TIME, LATEST_TIME
from rulekit.errors import ChannelError

MessageKind = Literal["text", "photo", "sticker", "document", "voice", "video", "other"]
"""What a message holds (``message.kind`` in events)."""

MEDIA_KINDS: tuple[MessageKind, ...] = ("photo", "sticker", "document", "voice", "video")
"""Kinds read from the key of the same name in a message; a message with none of them and no
text is ``other`` (a location, a poll, a contact, ...)."""

SERVICE_KEYS: frozenset[str] = frozenset(
    {
        "boost_added",
        "channel_chat_created",
        "chat_background_set",
        "chat_owner_changed",
        "chat_owner_left",
        "chat_shared",
        "checklist_tasks_added",
        "checklist_tasks_done",
        "connected_website",
        "delete_chat_photo",
        "direct_message_price_changed",
        "forum_topic_closed",
        "forum_topic_created",
        "forum_topic_edited",
        "forum_topic_reopened",
        "general_forum_topic_hidden",
        "general_forum_topic_unhidden",
        "gift",
        "gift_upgrade_sent",
        "giveaway_completed",
        "giveaway_created",
        "group_chat_created",
        "left_chat_member",
        "message_auto_delete_timer_changed",
        "migrate_from_chat_id",
        "migrate_to_chat_id",
        "new_chat_members",
        "new_chat_photo",
        "new_chat_title",
        "paid_message_price_changed",
        "pinned_message",
        "proximity_alert_triggered",
        "refunded_payment",
        "successful_payment",
        "suggested_post_approval_failed",
        "suggested_post_approved",
        "suggested_post_declined",
        "suggested_post_paid",
        "suggested_post_refunded",
        "supergroup_chat_created",
        "unique_gift",
        "users_shared",
        "video_chat_ended",
        "video_chat_participants_invited",
        "video_chat_scheduled",
        "video_chat_started",
        "web_app_data",
        "write_access_allowed",
    }
)
"""The fields of the Bot API's service messages: in a private chat, Telegram writes one when
the user pins a message, sets the auto-delete timer, pays, opens a topic, lets the bot write to
them... Each is sent ``from`` the user, but none is something the user wrote: as a message it
fired the rules for a client's message (an autoreply to a pin) and reopened a closed
conversation."""

MAX_ID = 2**63 - 1
"""Telegram's ids fit in 64 bits; a larger number is not an id."""


@dataclass(slots=True, frozen=True)
class TelegramUser:
    """The person writing to the bot."""

    id: int
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None

    @property
    def name(self) -> str | None:
        """First and last name, as Telegram shows them."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) or None


@dataclass(slots=True, frozen=True)
class TelegramMessage:
    """A message the user sent (or edited) in their private chat with the bot."""

    message_id: int
    chat_id: int
    user: TelegramUser
    kind: MessageKind
    text: str | None = None
    """The text, or a media message's caption."""
    date: datetime | None = None
    edit_date: datetime | None = None
    edited: bool = False
    album: str | None = None
    """The album (``media_group_id``) the message is a photo or video of, or None."""
    topic: int | None = None
    """The topic of the private chat it was written in (``message_thread_id`` of a message
    with ``is_topic_message``; Bot API 9.3), or None outside topics."""

    @property
    def is_stop(self) -> bool:
        """Whether it is the ``/stop`` command (``/stop`` or ``/stop@<bot name>``)."""
        if self.edited or self.kind != "text" or self.text is None:
            return False
        command = self.text.strip().split(maxsplit=1)
        return bool(command) and command[0].split("@", 1)[0] == "/stop"


@dataclass(slots=True, frozen=True)
class Update:
    """One update, read. ``message`` is None for updates that mean nothing to rulekit."""

    update_id: int
    message: TelegramMessage | None = None
    raw: Any = None


def parse_body(body: bytes | str) -> Update:
    """Decode and read an update; raise :class:`ChannelError` if it is not one."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ChannelError("the body is not acceptable JSON: nested too deeply") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ChannelError(f"the body is not valid JSON: {exc}") from None
    return read_update(data)


def read_update(data: Any) -> Update:
    """Read decoded JSON as a Telegram update; raise :class:`ChannelError` if it is not one."""
    if not isinstance(data, dict):
        raise ChannelError(f"the body must be a JSON object (an Update), got {_kind(data)}")
    update_id = _required_id(data, "update_id", "update_id")
    message = None
    for key, edited in (("message", False), ("edited_message", True)):
        if key in data:
            message = _message(key, data[key], edited=edited)
            break
    return Update(update_id=update_id, message=message, raw=data)


def update_chat(data: Any) -> int | None:
    """The private chat an update's message is in, read without checking the rest (None when
    it has none); for ordering a conversation's updates before they are read."""
    if not isinstance(data, dict):
        return None
    for key in ("message", "edited_message"):
        message = data.get(key)
        if isinstance(message, dict):
            chat = message.get("chat")
            if isinstance(chat, dict) and chat.get("type") == "private":
                return _id(chat.get("id"))
    return None


def update_key(data: Any) -> str | None:
    """What tells an update from any other, read without checking the rest (None for no
    update): ``update:<update_id>``, and for one with a message, its chat and message id too
    (``update:<update_id>:<chat>:<message_id>``). After a week without updates Telegram
    numbers the next at random, so an ``update_id`` alone may come again, for another
    message: the message's own ids, which only grow in a chat, tell the two apart."""
    if not isinstance(data, dict):
        return None
    update_id = _id(data.get("update_id"))
    if update_id is None:
        return None
    for key in ("message", "edited_message"):
        message = data.get(key)
        if isinstance(message, dict):
            chat = message.get("chat")
            chat_id = _id(chat.get("id")) if isinstance(chat, dict) else None
            message_id = _id(message.get("message_id"))
            if chat_id is not None and message_id is not None:
                return f"update:{update_id}:{chat_id}:{message_id}"
            break
    return f"update:{update_id}"


# -- parts --------------------------------------------------------------------------------------


def _message(where: str, value: Any, *, edited: bool) -> TelegramMessage | None:
    if not isinstance(value, dict):
        raise ChannelError(f"{where} must be an object, got {_kind(value)}")
    message_id = _required_id(value, "message_id", f"{where}.message_id")
    chat = value.get("chat")
    if not isinstance(chat, dict):
        problem = "is missing" if chat is None else f"must be an object, got {_kind(chat)}"
        raise ChannelError(f"{where}.chat {problem}")
    chat_id = _required_id(chat, "id", f"{where}.chat.id")
    if chat.get("type") != "private":
        return None  # a group or a channel the bot was added to: not a client's conversation
    sender = value.get("from")
    if not isinstance(sender, dict):
        problem = "is missing" if sender is None else f"must be an object, got {_kind(sender)}"
        raise ChannelError(f"{where}.from {problem}")
    user_id = _required_id(sender, "id", f"{where}.from.id")
    if sender.get("is_bot") is True or not SERVICE_KEYS.isdisjoint(value):
        return None
    if edited and value.get("location") is not None:
        # a live location moving (or stopped): Telegram sends each new position as an edit,
        # every few seconds for up to a day; the user wrote nothing
        return None
    user = TelegramUser(
        id=user_id,
        first_name=_string(sender.get("first_name")),
        last_name=_string(sender.get("last_name")),
        username=_string(sender.get("username")),
        language_code=_string(sender.get("language_code")),
    )
    text = value.get("text")
    kind: MessageKind
    if isinstance(text, str):
        kind = "text"
    else:
        kind = next((k for k in MEDIA_KINDS if value.get(k) is not None), "other")
        caption = value.get("caption")
        text = caption if isinstance(caption, str) else None
    return TelegramMessage(
        message_id=message_id,
        chat_id=chat_id,
        user=user,
        kind=kind,
        text=text,
        date=timestamp(value.get("date")),
        edit_date=timestamp(value.get("edit_date")),
        edited=edited,
        album=_string(value.get("media_group_id")),
        topic=_id(value.get("message_thread_id"))
        if value.get("is_topic_message") is True
        else None,
    )


# -- values -------------------------------------------------------------------------------------


def timestamp(value: Any) -> datetime | None:
    """A Telegram time (Unix seconds) as an aware UTC datetime; anything else is None, and so
    is a time outside :func:`rulekit.channels.body.bounded_time`'s range (a date in the year
    9999 plus the idle timer's ``close_after`` is past the end of ``datetime``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if not _EARLIEST <= value <= _LATEST:
        return None
    return datetime.fromtimestamp(value, UTC)


_EARLIEST = int(EARLIEST_TIME.timestamp())
_LATEST = int(LATEST_TIME.timestamp())


def _id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -MAX_ID <= value <= MAX_ID:
        return value
    return None


def _required_id(data: dict[str, Any], key: str, where: str) -> int:
    value = data.get(key)
    found = _id(value)
    if found is None:
        if value is None:
            raise ChannelError(f"{where} is missing")
        if isinstance(value, int) and not isinstance(value, bool):
            raise ChannelError(f"{where} is out of range")
        raise ChannelError(f"{where} must be an integer, got {_kind(value)}")
    return found


def _string(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
