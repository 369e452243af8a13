"""Properties over generated updates: any JSON gives events or a clear channel error, and a
user's messages each give exactly one event, whatever is redelivered."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rulekit.errors import ChannelError
from rulekit.event import Event
from rulekit.store import MemoryStore
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_samples import make_provider

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)

# Keys and values Telegram uses, so that generated objects reach past the first checks.
telegram_keys = st.sampled_from(
    [
        "update_id", "message", "edited_message", "message_id", "chat", "id", "type", "from",
        "is_bot", "first_name", "last_name", "username", "language_code", "text", "caption",
        "date", "edit_date", "photo", "sticker", "document", "voice", "video",
    ]
)  # fmt: skip
telegram_values = json_values | st.sampled_from(["private", "group", "/stop", "/start"])
telegram_objects = st.recursive(
    telegram_values,
    lambda children: st.dictionaries(telegram_keys, children, max_size=8),
    max_leaves=30,
)


def _parse(body: bytes) -> list[Event] | ChannelError:
    provider, store = make_provider(), MemoryStore()
    try:
        with store.transaction() as state:
            return provider.parse(body, state)
    except ChannelError as exc:
        return exc


def _check(result: list[Event] | ChannelError) -> None:
    if isinstance(result, ChannelError):
        text = str(result)
        assert text and "\n" not in text and "Traceback" not in text
        return
    for event in result:
        assert event.event in ("created", "message", "reopened", "closed", "client_updated")
        assert event.channel == "telegram"
        Event.model_validate_json(event.model_dump_json())  # it can be stored and read back


@given(json_values)
def test_any_json_value_gives_events_or_a_channel_error(value: Any) -> None:
    _check(_parse(json.dumps(value).encode()))


@given(telegram_objects)
def test_any_object_of_telegram_s_words_gives_events_or_a_channel_error(value: Any) -> None:
    _check(_parse(json.dumps(value).encode()))


@st.composite
def mutated_updates(draw) -> Any:
    """A real-looking update with one field of its message replaced by arbitrary JSON."""
    updates = Updates()
    user = TelegramUser(draw(st.integers(1, 2**40)), draw(st.text(max_size=20)))
    kind = draw(st.sampled_from(["text", "photo", "sticker", "document", "voice", "video"]))
    update = updates.message(user, draw(st.text(max_size=50)), kind=kind)
    if draw(st.booleans()):
        update = updates.edit(update, "edited")
    message = update.get("message") or update["edited_message"]
    target = draw(st.sampled_from([message, message["from"], message["chat"], update]))
    target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    return update


@given(mutated_updates())
def test_a_real_update_with_any_field_broken_gives_events_or_a_channel_error(value: Any) -> None:
    _check(_parse(json.dumps(value).encode()))


@given(st.binary(max_size=200))
def test_any_bytes_give_events_or_a_channel_error(body: bytes) -> None:
    _check(_parse(body))


@given(
    st.lists(
        st.tuples(st.sampled_from([111, 222]), st.sampled_from(["hi", "/stop", "x"])), max_size=12
    ),
    st.lists(st.integers(0, 11), max_size=6),
)
def test_every_message_gives_one_event_whatever_is_redelivered(
    sent: list[tuple[int, str]], again: list[int]
) -> None:
    updates = Updates()
    users = {n: TelegramUser(n, f"user{n}") for n in (111, 222)}
    bodies = [updates.message(users[user], text) for user, text in sent]
    deliveries = list(bodies) + [bodies[i] for i in again if i < len(bodies)]
    provider, store = make_provider(), MemoryStore()
    events: list[Event] = []
    for body in deliveries:
        with store.transaction() as state:
            events.extend(provider.parse(json.dumps(body).encode(), state))
    # a model of a conversation: what each message should mean
    status: dict[int, str] = {}
    expected: list[str] = []
    for user, text in sent:
        if text == "/stop":
            if status.get(user) == "open":
                expected.append("closed")
                status[user] = "closed"
            continue
        expected.append(
            {None: "created", "open": "message", "closed": "reopened"}[status.get(user)]
        )
        status[user] = "open"
    assert [e.event for e in events] == expected
    assert len({e.id for e in events}) == len(events)
