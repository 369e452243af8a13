"""From one read update to rulekit's normalized events, using and updating conversation state.

A Telegram user writes to the bot in their private chat; rulekit sees one conversation per
chat, keyed by the chat's id (in a private chat, the user's id, which replies need):

* an update already seen yields nothing, so a redelivered update (a webhook retried, a
  ``getUpdates`` answer fetched again after a restart) fires no rule twice. It is known by its
  ``update_id`` with its message's chat and id (:func:`~rulekit_telegram.update.update_key`):
  after a week without updates Telegram numbers them anew, at random, so an ``update_id``
  alone may come again for another message;
* the first message of a user never seen is ``created``; a message in a closed conversation is
  ``reopened``; any other is ``message``. ``/stop`` closes an open conversation (``closed``)
  and is no message;
* an edited message is a ``message`` with ``message.edited: true`` (it never reopens);
* a known user whose name, username or language changed yields ``client_updated`` first, so
  the message's rules see the new data;
* a message written before the user's latest one read so far (webhooks may come out of
  order) changes neither their profile nor their topic, nor their last visit, and reopens
  no closed conversation (it is a ``message`` in it); such a ``/stop`` closes nothing;
* a photo, sticker, document, voice note or video is a message of that ``kind`` with its
  caption as text (or none); anything else a user can send is ``other``;
* an album (photos or videos sent together: Telegram delivers each as a message of its own,
  with one ``media_group_id``) is one ``message`` (or ``created``, ``reopened``): the part
  read first. Each other part is an ``album_part`` event, with its own caption, which
  reopens nothing: rules on ``message`` answer the album once, and a rule on
  ``album_part`` sees every other photo. ``message.album`` names the album on all of them;
  the first is known by a mark in the store, so the parts may be read by several daemons;
* a message written in a topic of the chat (Bot API 9.3: users may organize their chat with a
  bot into topics) puts the topic in ``client.custom.telegram_topic``: replies go there, not
  to the chat's main view, where the user does not look for them.

Event ids derive from Telegram's ids, so that a redelivered update makes the same id and no
two updates make one: ``<channel>:msg:<chat>:<message id>``,
``<channel>:edit:<chat>:<message id>:<edit date>:<update id>`` (``edit_date`` counts whole
seconds: two edits in one second differ by their update), ``<channel>:closed:<chat>:<message
id>`` (``/stop``) and ``<channel>:client:<user id>:<update id>:<message id>`` (an
``update_id`` may come again after Telegram numbers updates anew).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rulekit.channels.body import bounded_key
from rulekit.event import Client, Conversation, Event, Message
from rulekit.store.base import State

from .settings import TelegramSettings
from .update import TelegramMessage, TelegramUser, Update

TOPIC = "telegram_topic"
"""The key in ``client.custom`` of the topic of their chat the user last wrote in."""

CLEARED_BY_ABSENCE = frozenset({"display_name"})
"""Client fields that a ``from`` object without their source clears, rather than leaving the
known value: the ``@username`` (optional in the Bot API's ``User`` only because not everyone
has one)."""

PROFILE_FIELDS: tuple[str, ...] = ("name", "display_name", "language")
"""Client fields whose change is a ``client_updated`` event."""


@dataclass(frozen=True)
class Normalizer:
    """Derives a channel's events from Telegram updates."""

    channel: str
    settings: TelegramSettings

    def events(self, update: Update, state: State) -> list[Event]:
        """The events one update means, in order; updates ``state`` to match."""
        message = update.message
        if message is None:
            return []
        seen = f"update:{update.update_id}:{message.chat_id}:{message.message_id}"
        if not state.mark_message_seen(self.channel, seen):  # (as update_key writes it)
            return []
        key = str(message.chat_id)
        known_conversation = state.get_conversation(self.channel, key)
        known_client = state.get_client(self.channel, str(message.user.id))
        activity = _activity(message)
        last_visit = known_client.last_visit if known_client is not None else None
        stale = known_client is not None and _before(activity, last_visit)
        if known_client is not None and stale:
            # written before the user's latest message read so far (webhooks may come out of
            # order): their record keeps the latest profile and topic; the event names the
            # topic it was written in, where its own reply goes
            client = known_client
            event_client = _in_topic(known_client, message.topic)
        else:
            client = self.client(message.user, known_client, seen_at=activity, topic=message.topic)
            event_client = client
        conversation = known_conversation
        events: list[Event] = []

        def emit(name: str, event_id: str, when: datetime | None, **parts: Any) -> None:
            assert conversation is not None
            events.append(
                Event(
                    id=f"{self.channel}:{event_id}",
                    channel=self.channel,
                    event=name,
                    occurred_at=when or datetime.now(UTC),
                    conversation=conversation,
                    client=event_client,
                    raw=update.raw,
                    **parts,
                )
            )

        when = (message.edit_date or message.date) if message.edited else message.date
        idle_since = known_client.last_visit if known_client is not None else None
        if (
            conversation is not None
            and conversation.status == "open"
            and idle_since is not None
            and when is not None
            and when - idle_since >= self.settings.close_after
        ):
            # Nobody wrote for close_after: the conversation closed then, before this update.
            conversation = conversation.model_copy(update={"status": "closed"})
            emit(
                "closed",
                f"idle:{message.chat_id}:{int(idle_since.timestamp())}",
                idle_since + self.settings.close_after,
            )

        if (
            conversation is not None
            and known_client is not None
            and _profile_changed(known_client, client)
        ):
            # the update's id, not the new profile: a name changed back to one it had before
            # is a change too, and an event id already recorded would be dropped as a repeat
            # (with the message's id: after a week without updates Telegram numbers them anew,
            # at random, so an update_id alone may come again for another change)
            emit(
                "client_updated",
                f"client:{client.id}:{update.update_id}:{message.message_id}",
                when,
            )

        chat = message.chat_id
        if message.is_stop:
            # only a conversation that is open can be closed; /stop before any message is
            # nothing, and so is one written before the user's latest message (read late:
            # they wrote again after it)
            if conversation is not None and conversation.status != "closed" and not stale:
                conversation = conversation.model_copy(update={"status": "closed"})
                emit("closed", f"closed:{chat}:{message.message_id}", when)
        elif message.edited:
            edited_at = int(message.edit_date.timestamp()) if message.edit_date else 0
            name = "message"
            if conversation is None:
                conversation, name = self._new_conversation(message), "created"
            # the update's id too: edit_date counts whole seconds, and two edits of one
            # message in a second are two events (one id, the second read as a repeat)
            emit(
                name,
                f"edit:{chat}:{message.message_id}:{edited_at}:{update.update_id}",
                when,
                message=self._message(message),
            )
        elif state.mark_message_seen(self.channel, f"msg:{chat}:{message.message_id}"):
            first = self._first_of_album(message, state)
            if conversation is None:
                conversation, name = self._new_conversation(message), "created"
            elif not first:
                # another photo or video of an album whose first was the message: the client
                # sent one thing (one autoreply), and this part's caption is still an event
                name = "album_part"
            elif conversation.status == "closed" and not stale:
                conversation, name = conversation.model_copy(update={"status": "open"}), "reopened"
            else:
                # (a message written before the user's latest, read late, is no return of
                # theirs: it reopens nothing)
                name = "message"
            emit(name, f"msg:{chat}:{message.message_id}", when, message=self._message(message))

        if conversation is not None:
            if conversation is not known_conversation:
                state.save_conversation(self.channel, key, conversation)
            if client is not known_client:
                state.save_client(self.channel, client)
        return events

    def close_idle(self, conversation_id: str, due: datetime, state: State) -> list[Event]:
        """The ``closed`` event of a conversation whose ``close_after`` timer fell due at
        ``due``, if it is still open and nobody wrote since (else nothing); updates ``state``.
        Its id is the one :meth:`events` gives the same close found on the next update, so
        the close is recorded once whichever comes first."""
        found = state.find_conversation(self.channel, conversation_id)
        if found is None or found[1].status != "open":
            return []
        key, conversation = found
        chat = conversation.external_id or key
        client = state.get_client(self.channel, chat)
        idle_since = client.last_visit if client is not None else None
        if idle_since is None:
            # no record of when they last wrote (erased by rulekit forget): the timer, which
            # each activity moves, says it
            idle_since = due - self.settings.close_after
        if idle_since + self.settings.close_after > due:
            return []  # active meanwhile: a later timer closes it
        closed = conversation.model_copy(update={"status": "closed"})
        state.save_conversation(self.channel, key, closed)
        return [
            Event(
                id=f"{self.channel}:idle:{chat}:{int(idle_since.timestamp())}",
                channel=self.channel,
                event="closed",
                occurred_at=idle_since + self.settings.close_after,
                conversation=closed,
                client=client if client is not None else Client(id=chat),
            )
        ]

    def client(
        self,
        user: TelegramUser,
        known: Client | None,
        *,
        seen_at: datetime | None = None,
        topic: int | None = None,
    ) -> Client:
        """The client record: the user's profile as Telegram sent it now, over what was known
        (a field Telegram left out keeps its known value, except the username, which a user
        may remove), ``last_visit``, when they last wrote (``seen_at``, or the known last visit
        when that is later), and ``custom.telegram_topic``, the topic of their chat they wrote
        in (none outside topics), where replies go; an unchanged record is ``known``."""
        custom = dict(known.custom) if known is not None else {}
        if user.username:
            custom["telegram_username"] = user.username
        else:
            # Telegram sends a username whenever the user has one: none means they removed it,
            # and the old one, free again, may be someone else's by now
            custom.pop("telegram_username", None)
        if topic is not None:
            custom[TOPIC] = topic
        else:
            custom.pop(TOPIC, None)
        if known is not None and known.last_visit is not None and seen_at is not None:
            # the latest of their messages, whatever order they come in (webhooks may come out
            # of order): one written before their last, delivered after it, is no later visit
            seen_at = max(seen_at, known.last_visit)
        values: dict[str, Any] = {
            "name": user.name,
            "display_name": f"@{user.username}" if user.username else None,
            "language": user.language_code,
            "last_visit": seen_at,
        }
        if known is not None:
            values = {
                k: v if v is not None or k in CLEARED_BY_ABSENCE else getattr(known, k)
                for k, v in values.items()
            }
            unchanged = all(getattr(known, k) == v for k, v in values.items())
            if unchanged and known.custom == custom:
                return known
            return known.model_copy(update={**values, "custom": custom})
        return Client(id=str(user.id), custom=custom, **values)

    def _first_of_album(self, message: TelegramMessage, state: State) -> bool:
        """Whether ``message`` is the first read of its album (or in none); marks the album
        seen. The mark is in the store, in the update's transaction: the parts of an album,
        read by several daemons, make one first."""
        if message.album is None:
            return True
        mark = bounded_key(f"album:{message.chat_id}:{message.album}")
        return mark is None or state.mark_message_seen(self.channel, mark)

    def _new_conversation(self, message: TelegramMessage) -> Conversation:
        return Conversation(
            id=f"{self.channel}:{message.chat_id}",
            external_id=str(message.chat_id),
            status="open",
            group=self.settings.default_group,
        )

    @staticmethod
    def _message(message: TelegramMessage) -> Message:
        return Message(
            id=f"{message.chat_id}:{message.message_id}",
            text=message.text,
            author="client",
            created_at=message.date,
            kind=message.kind,
            edited=message.edited,
            album=message.album,
        )


def _profile_changed(known: Client, client: Client) -> bool:
    return any(getattr(known, f) != getattr(client, f) for f in PROFILE_FIELDS)


def _before(when: datetime | None, known: datetime | None) -> bool:
    """Whether ``when`` is earlier than ``known`` (False when either is unknown)."""
    return when is not None and known is not None and when < known


def _in_topic(client: Client, topic: int | None) -> Client:
    """``client`` with ``topic`` as the topic of their chat they wrote in (none: outside
    topics)."""
    if client.custom.get(TOPIC) == topic:
        return client
    custom = {key: value for key, value in client.custom.items() if key != TOPIC}
    if topic is not None:
        custom[TOPIC] = topic
    return client.model_copy(update={"custom": custom})


def _activity(message: TelegramMessage) -> datetime | None:
    """When the user was last active: the message's date, or the edit's."""
    return (message.edit_date or message.date) if message.edited else message.date
