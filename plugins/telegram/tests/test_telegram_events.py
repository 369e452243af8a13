"""What a Telegram user's updates become: the same kinds of events as a Chatra visitor's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rulekit.errors import ChannelError
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_samples import ANN, BORIS, CHANNEL, encode, make_provider


def names(events) -> list[str]:
    return [e.event for e in events]


def test_a_first_message_creates_the_conversation_with_the_client(feed, updates: Updates) -> None:
    update = updates.message(ANN, "/start")
    [event] = feed(update)
    assert event.event == "created"
    assert event.id == f"{CHANNEL}:msg:111:1"
    assert event.channel == CHANNEL
    assert event.conversation.id == f"{CHANNEL}:111"
    assert event.conversation.external_id == "111"
    assert event.conversation.status == "open"
    assert event.conversation.group == "support"
    client = event.client
    assert (client.id, client.name, client.display_name, client.language) == (
        "111",
        "Ann Lee",
        "@ann_lee",
        "en",
    )
    assert client.custom == {"telegram_username": "ann_lee"}
    message = event.message
    assert (message.id, message.text, message.author, message.kind, message.edited) == (
        "111:1",
        "/start",
        "client",
        "text",
        False,
    )
    assert event.occurred_at == datetime.fromtimestamp(update["message"]["date"], UTC)
    assert event.raw == update


def test_later_messages_are_messages_and_each_user_has_a_conversation(
    feed, updates: Updates
) -> None:
    events = feed(
        updates.message(ANN, "Hi"),
        updates.message(ANN, "my order is late"),
        updates.message(BORIS, "Hello"),
    )
    assert names(events) == ["created", "message", "created"]
    assert [e.conversation.id for e in events] == ["telegram:111", "telegram:111", "telegram:222"]
    assert events[2].client.display_name is None  # Boris has no username
    assert events[2].client.custom == {}


def test_stop_closes_the_conversation_and_is_no_message(feed, updates: Updates) -> None:
    events = feed(
        updates.message(ANN, "Hi"),
        updates.message(ANN, "/stop"),
        updates.message(ANN, "/stop"),  # already closed: nothing more
    )
    assert names(events) == ["created", "closed"]
    closed = events[1]
    assert closed.id == "telegram:closed:111:2"
    assert closed.conversation.status == "closed"
    assert closed.message.text is None


def test_a_message_after_closing_reopens(feed, updates: Updates) -> None:
    events = feed(
        updates.message(ANN, "Hi"),
        updates.message(ANN, "/stop@rulekit_test_bot"),
        updates.message(ANN, "me again"),
        updates.message(ANN, "still there?"),
    )
    assert names(events) == ["created", "closed", "reopened", "message"]
    assert events[2].conversation.status == "open"
    assert events[2].message.text == "me again"


def test_stop_before_any_message_is_nothing(feed, updates: Updates) -> None:
    assert feed(updates.message(ANN, "/stop")) == []
    assert names(feed(updates.message(ANN, "hi"))) == ["created"]


@pytest.mark.parametrize("kind", ["photo", "sticker", "document", "voice", "video"])
def test_media_are_messages_of_their_kind_with_the_caption_as_text(
    feed, updates: Updates, kind: str
) -> None:
    first, second = feed(
        updates.message(ANN, kind=kind, caption="look"), updates.message(ANN, kind=kind)
    )
    assert (first.event, first.message.kind, first.message.text) == ("created", kind, "look")
    assert (second.event, second.message.kind, second.message.text) == ("message", kind, None)


def test_anything_else_a_user_sends_is_a_message_of_kind_other(feed, updates: Updates) -> None:
    [event] = feed(updates.message(ANN, kind="location"))
    assert (event.event, event.message.kind, event.message.text) == ("created", "other", None)


SERVICE_MESSAGES = [
    ("write_access_allowed", {"from_request": True}),
    ("pinned_message", {"message_id": 1, "chat": {"id": 111, "type": "private"}, "date": 0}),
    ("message_auto_delete_timer_changed", {"message_auto_delete_time": 86400}),
    ("forum_topic_created", {"name": "Refund", "icon_color": 7322096}),
    ("successful_payment", {"currency": "XTR", "total_amount": 5, "invoice_payload": "p"}),
    ("users_shared", {"request_id": 1, "users": [{"user_id": 5}]}),
]


@pytest.mark.parametrize(("key", "value"), SERVICE_MESSAGES)
def test_service_messages_are_not_the_client_writing(
    feed, updates: Updates, key: str, value: object
) -> None:
    # Telegram sends them from the user; as messages of kind other they fired the rules for a
    # client's message (an autoreply to a pin) and reopened a closed conversation
    assert feed(updates.service(ANN, key, value)) == []  # none creates a conversation
    events = feed(
        updates.message(ANN, "Hi"),
        updates.message(ANN, "/stop"),
        updates.service(ANN, key, value),
        updates.message(ANN, "back"),
    )
    assert names(events) == ["created", "closed", "reopened"]
    assert events[-1].message.text == "back"


def test_the_topic_the_user_writes_in_is_kept_for_the_replies(feed, updates: Updates) -> None:
    # Bot API 9.3: a user may organize their chat with the bot into topics
    events = feed(
        updates.message(ANN, "Refund please", topic=7),
        updates.message(ANN, "and another thing", topic=9),
        updates.message(ANN, "in the chat itself"),
    )
    assert names(events) == ["created", "message", "message"]
    assert [e.client.custom.get("telegram_topic") for e in events] == [7, 9, None]
    assert events[0].conversation.id == events[2].conversation.id == "telegram:111"
    # a reply thread outside topics (no is_topic_message) is no topic
    reply = updates.message(ANN, "re")
    reply["message"]["message_thread_id"] = 3
    [event] = feed(reply)
    assert "telegram_topic" not in event.client.custom


def test_a_live_location_moving_is_no_edit(feed, updates: Updates) -> None:
    # Telegram sends each new position of a live location as an edited_message, every few
    # seconds for up to a day: each was a message event (edited), firing the message rules
    # and keeping the conversation from ever going idle
    shared = updates.message(ANN, kind="location")
    shared["message"]["location"] = {"latitude": 52.52, "longitude": 13.4, "live_period": 3600}
    moves = []
    for step in range(3):
        moved = updates.edit(shared, "")
        del moved["edited_message"]["text"]
        moved["edited_message"]["location"] = {
            "latitude": 52.52 + step / 1000,
            "longitude": 13.4,
            "live_period": 3600,
        }
        moves.append(moved)
    events = feed(shared, *moves, updates.message(ANN, "where is my courier?"))
    assert names(events) == ["created", "message"]
    assert events[1].message.text == "where is my courier?"


def test_an_edit_is_a_message_marked_edited(feed, updates: Updates) -> None:
    first = updates.message(ANN, "helo")
    edit = updates.edit(first, "hello")
    events = feed(first, edit)
    assert names(events) == ["created", "message"]
    edited = events[1]
    assert edited.message.edited is True
    assert edited.message.text == "hello"
    assert edited.message.id == "111:1"
    edited_at, update_id = edit["edited_message"]["edit_date"], edit["update_id"]
    assert edited.id == f"telegram:edit:111:1:{edited_at}:{update_id}"
    assert edited.occurred_at == datetime.fromtimestamp(edit["edited_message"]["edit_date"], UTC)


def test_an_edit_in_a_closed_conversation_does_not_reopen_it(feed, updates: Updates) -> None:
    first = updates.message(ANN, "helo")
    events = feed(first, updates.message(ANN, "/stop"), updates.edit(first, "hello"))
    assert names(events) == ["created", "closed", "message"]
    assert events[2].conversation.status == "closed"


def test_a_changed_profile_is_client_updated_before_the_message(feed, updates: Updates) -> None:
    renamed = TelegramUser(111, "Ann", "Weber", username="ann_w", language_code="de")
    events = feed(updates.message(ANN, "Hi"), updates.message(renamed, "new name"))
    assert names(events) == ["created", "client_updated", "message"]
    updated = events[1]
    assert (updated.client.name, updated.client.display_name, updated.client.language) == (
        "Ann Weber",
        "@ann_w",
        "de",
    )
    assert updated.client.custom == {"telegram_username": "ann_w"}
    assert updated.id.startswith("telegram:client:111:")
    # the same profile again is no change
    assert names(feed(updates.message(renamed, "again"))) == ["message"]


def test_a_username_removed_is_forgotten_not_kept(feed, updates: Updates) -> None:
    # the user removed their @username (it may be someone else's by now): the old one stayed
    # the client's display name for ever
    anonymous = TelegramUser(111, "Ann", "Lee", language_code="en")
    events = feed(updates.message(ANN, "Hi"), updates.message(anonymous, "again"))
    assert names(events) == ["created", "client_updated", "message"]
    for event in events[1:]:
        assert (event.client.name, event.client.display_name) == ("Ann Lee", None)
        assert "telegram_username" not in event.client.custom
    assert names(feed(updates.message(anonymous, "and again"))) == ["message"]


def test_a_name_changed_back_and_forth_is_an_event_each_time_with_its_own_id(
    feed, updates: Updates
) -> None:
    """The daemon records an event id once (a repeat is a redelivery): a change back to a
    profile the user had before got the id of the first change to it, and was dropped."""
    feed(updates.message(ANN, "Hi"))
    renamed = TelegramUser(111, "Anna", "Lee", username="ann_lee", language_code="en")
    updated = []
    for user in (renamed, ANN, renamed):
        events = feed(updates.message(user, "hi"))
        assert names(events) == ["client_updated", "message"]
        updated.append(events[0])
    assert [e.client.name for e in updated] == ["Anna Lee", "Ann Lee", "Anna Lee"]
    assert len({e.id for e in updated}) == 3


def test_a_message_read_after_a_later_one_brings_back_no_old_profile_or_topic(
    feed, store, updates: Updates
) -> None:
    """Telegram's webhooks may arrive out of order. A message written before the user renamed
    themselves and moved to another topic, read after their later message, set their old name
    back (a ``client_updated`` to it, and another to the new name on their next message) and
    sent the replies to their later messages to the old topic. Its own reply still goes where
    it was written."""
    renamed = TelegramUser(111, "Anna", "Weber", username="anna_w", language_code="de")
    first = updates.message(ANN, "Hi", topic=7)
    late = updates.message(ANN, "written before the rename", topic=7)
    last = updates.message(renamed, "after the rename", topic=9)
    events = feed(first, last, late)
    assert names(events) == ["created", "client_updated", "message", "message"]
    stale = events[-1]
    assert (stale.client.name, stale.client.display_name) == ("Anna Weber", "@anna_w")
    assert stale.client.custom["telegram_topic"] == 7  # its own reply: where it was written
    with store.transaction() as state:
        client = state.get_client(CHANNEL, "111")
    assert (client.name, client.language, client.custom["telegram_topic"]) == (
        "Anna Weber",
        "de",
        9,
    )
    assert names(feed(updates.message(renamed, "next", topic=9))) == ["message"]


def test_a_message_written_before_the_chat_closed_and_read_after_does_not_reopen_it(
    feed, updates: Updates
) -> None:
    """A message written before the user's last one, read only after the chat closed (it
    came late), is no return of the user: it reopened the chat (the rules on ``reopened``
    greeted them again) and the idle timer, due long ago, closed it at once."""
    first = updates.message(ANN, "Hi")
    late = updates.message(ANN, "written second, read last")
    last = updates.message(ANN, "written last")
    updates.date += 3600
    events = feed(first, last, updates.message(ANN, "/stop"), late)
    assert names(events) == ["created", "message", "closed", "message"]
    assert events[-1].conversation.status == "closed"
    assert names(feed(updates.message(ANN, "back"))) == ["reopened"]


def test_a_stop_written_before_the_user_s_last_message_and_read_after_it_closes_nothing(
    feed, updates: Updates
) -> None:
    """``/stop`` then a new message, delivered the other way round: the user came back after
    stopping, and the late ``/stop`` closed the chat they were writing in."""
    first = updates.message(ANN, "Hi")
    stop = updates.message(ANN, "/stop")
    again = updates.message(ANN, "one more thing")
    events = feed(first, again, stop)
    assert names(events) == ["created", "message"]
    assert names(feed(updates.message(ANN, "still here"))) == ["message"]


def test_a_redelivered_update_yields_nothing(feed, updates: Updates) -> None:
    update = updates.message(ANN, "Hi")
    assert names(feed(update)) == ["created"]
    assert feed(update) == []
    assert feed(encode(update)) == []


def test_an_update_numbered_as_an_old_one_is_no_redelivery(feed) -> None:
    """After a week without updates Telegram numbers them anew, at random: an update_id seen
    long ago may come again, for another message, which must not be taken for a repeat."""
    old = Updates(first_update_id=5_000).message(ANN, "long ago")
    new = Updates(first_update_id=5_000).message(BORIS, "a week later, renumbered")
    assert old["update_id"] == new["update_id"]
    assert names(feed(old)) == ["created"]
    [created] = feed(new)
    assert (created.event, created.message.text) == ("created", "a week later, renumbered")


def test_updates_rulekit_has_no_use_for_yield_nothing(feed, updates: Updates) -> None:
    group = updates.message(ANN, "hello group")
    group["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Fans"}
    bot = updates.message(TelegramUser(999, "OtherBot"), "beep")
    bot["message"]["from"]["is_bot"] = True
    assert feed(updates.other(ANN), group, bot) == []


def test_the_conversation_key_is_the_private_chat(provider, updates: Updates) -> None:
    assert provider.conversation_key(updates.message(ANN, "Hi")) == "111"
    assert provider.conversation_key(updates.other(ANN)) is None
    assert provider.conversation_key([1, 2]) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "the body must be a JSON object (an Update), got a list"),
        (b"{}", "update_id is missing"),
        (b'{"update_id": "7"}', "update_id must be an integer, got a string"),
        (b'{"update_id": true}', "update_id must be an integer, got a boolean"),
        (b'{"update_id": 1e30}', "update_id must be an integer, got a number"),
        (b'{"update_id": 99999999999999999999999}', "update_id is out of range"),
        (b'{"update_id": 1, "message": 5}', "message must be an object, got a number"),
        (b'{"update_id": 1, "message": {"chat": {}}}', "message.message_id is missing"),
        (b'{"update_id": 1, "message": {"message_id": 1}}', "message.chat is missing"),
        (
            b'{"update_id": 1, "message": {"message_id": 1, "chat": {"id": 5, "type": "private"}}}',
            "message.from is missing",
        ),
        (
            b'{"update_id": 1, "edited_message": {"message_id": 1, "chat": {"id": []}}}',
            "edited_message.chat.id must be an integer, got a list",
        ),
        (b'{"update_id": 1', "the body is not valid JSON"),
    ],
)
def test_a_body_that_is_no_update_is_a_clear_channel_error(body: bytes, message: str) -> None:
    from rulekit.store import MemoryStore

    provider, store = make_provider(), MemoryStore()
    with pytest.raises(ChannelError) as caught, store.transaction() as state:
        provider.parse(body, state)
    assert message in str(caught.value)


def test_a_conversation_idle_for_close_after_is_closed_before_the_next_message(
    feed, updates: Updates
) -> None:
    first = updates.message(ANN, "Hi")
    updates.date += 30 * 60 - 1  # the next message comes exactly 30 minutes later
    events = feed(first, updates.message(ANN, "anyone there?"))
    assert names(events) == ["created", "closed", "reopened"]
    closed = events[1]
    started = first["message"]["date"]
    assert closed.id == f"telegram:idle:111:{started}"
    assert closed.occurred_at == datetime.fromtimestamp(started, UTC) + timedelta(minutes=30)
    assert closed.conversation.status == "closed"
    assert events[2].client.last_visit == datetime.fromtimestamp(started + 30 * 60, UTC)


def test_activity_within_close_after_keeps_the_conversation_open(feed, updates: Updates) -> None:
    first = updates.message(ANN, "Hi")
    updates.date += 29 * 60
    second = updates.message(ANN, "hello?")
    updates.date += 29 * 60
    assert names(feed(first, second, updates.message(ANN, "still?"))) == [
        "created",
        "message",
        "message",
    ]


def test_close_after_is_the_channel_s_setting(store, updates: Updates) -> None:
    provider = make_provider(close_after="2h")
    first = updates.message(ANN, "Hi")
    updates.date += 60 * 60
    events = []
    for update in (first, updates.message(ANN, "an hour later")):
        with store.transaction() as state:
            events.extend(provider.parse(encode(update), state))
    assert names(events) == ["created", "message"]


def test_an_album_is_one_message_and_its_other_parts_album_parts(feed, updates: Updates) -> None:
    parts = [
        updates.message(ANN, kind="photo", caption=caption, album="4410")
        for caption in ("front", None, "back")
    ]
    # the first to start a conversation is created; a redelivered first part is nothing
    events = feed(parts[0], parts[1], parts[0], parts[2])
    assert names(events) == ["created", "album_part", "album_part"]
    assert [e.message.text for e in events] == ["front", None, "back"]
    assert {e.message.album for e in events} == {"4410"}
    assert [e.id for e in events] == [
        "telegram:msg:111:1",
        "telegram:msg:111:2",
        "telegram:msg:111:3",
    ]
    # another album, and a photo sent alone, are messages of their own
    later = [updates.message(ANN, kind="photo", album="4411") for _ in range(2)]
    alone = updates.message(ANN, kind="photo")
    assert names(feed(*later, alone)) == ["message", "album_part", "message"]


def test_an_album_part_read_after_a_stop_reopens_nothing(feed, updates: Updates) -> None:
    first, last = (updates.message(ANN, kind="photo", album="4410") for _ in range(2))
    events = feed(first, updates.message(ANN, "/stop"), last)
    assert names(events) == ["created", "closed", "album_part"]
    assert events[2].conversation.status == "closed"
