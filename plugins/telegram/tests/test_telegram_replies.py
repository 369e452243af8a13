"""Replies to a Telegram user through the bot, against the fake Bot API: the exact request, and
the classification of every failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from rulekit.channels import Reply
from rulekit.errors import MAX_RETRY_AFTER, PermanentActionError, RetryableActionError
from rulekit.event import Client, Conversation
from rulekit.testing.clock import run_virtual
from rulekit.testing.fake_telegram import FakeTelegram, error
from telegram_samples import make_provider

from rulekit_telegram import TelegramProvider

REPLY = Reply(
    Conversation(id="telegram:111", external_id="111", status="open"),
    Client(id="111", name="Ann"),
    "Hi Ann, an agent will answer shortly.",
)


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


@pytest.fixture
def bot(telegram: FakeTelegram) -> TelegramProvider:
    return make_provider(token=telegram.token, base_url=telegram.service.base_url)


def send(provider: TelegramProvider, reply: Reply = REPLY, timeout: float = 5.0) -> dict:
    async def go() -> dict:
        try:
            return await provider.send_reply(reply, timeout=timeout)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def test_a_reply_is_sent_to_the_user_s_chat(bot: TelegramProvider, telegram: FakeTelegram) -> None:
    result = send(bot)
    [message] = telegram.messages()
    assert (message.chat_id, message.text, message.status) == ("111", REPLY.text, 200)
    assert message.request.json == {"chat_id": 111, "text": REPLY.text}
    assert result == {"message_id": 1, "chat_id": "111", "truncated": False}


def test_a_long_reply_is_truncated_to_telegram_s_limit(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    result = send(bot, Reply(REPLY.conversation, REPLY.client, "x" * 5000))
    [message] = telegram.messages()
    assert message.status == 200 and len(message.text) <= 4096
    assert result["truncated"] is True


IN_TOPIC = Reply(
    REPLY.conversation,
    Client(id="111", name="Ann", custom={"telegram_topic": 7}),
    "We are on it.",
)


def test_a_reply_goes_to_the_topic_the_user_wrote_in(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    # without message_thread_id it landed in the chat's main view, away from the user's topic
    send(bot, IN_TOPIC)
    [message] = telegram.messages()
    assert message.request.json == {"chat_id": 111, "text": "We are on it.", "message_thread_id": 7}
    assert "topic 7" in bot.describe_reply(IN_TOPIC)


def test_a_reply_to_a_deleted_topic_goes_to_the_chat(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    telegram.delete_topic(111, 7)
    result = send(bot, IN_TOPIC)
    first, second = telegram.messages()
    assert first.status == 400 and first.request.json["message_thread_id"] == 7
    assert second.status == 200 and second.request.json == {"chat_id": 111, "text": "We are on it."}
    assert result["message_id"] == 1


def test_flood_control_is_retryable_after_telegram_s_wait(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    telegram.flood(retry_after=7)
    with pytest.raises(RetryableActionError) as caught:
        send(bot)
    assert caught.value.retry_after == 7
    assert caught.value.status == 429
    assert "retry after 7 s" in str(caught.value)


def test_a_user_who_blocked_the_bot_is_a_permanent_failure_that_says_so(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    telegram.block(111)
    with pytest.raises(PermanentActionError) as caught:
        send(bot)
    assert "the user blocked the bot" in str(caught.value)
    assert "Forbidden: bot was blocked by the user" in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "kind", "said"),
    [
        (error(500, "Internal Server Error"), RetryableActionError, "Telegram failed (HTTP 500)"),
        (error(502, "Bad Gateway"), RetryableActionError, "Bad Gateway"),
        (error(400, "Bad Request: chat not found"), PermanentActionError, "chat not found"),
        (error(401, "Unauthorized"), PermanentActionError, "rejected the bot token"),
    ],
)
def test_failures_are_classified(
    bot: TelegramProvider, telegram: FakeTelegram, answer, kind, said: str
) -> None:
    telegram.fail(answer)
    with pytest.raises(kind) as caught:
        send(bot)
    assert said in str(caught.value)


def test_a_wrong_token_never_shows_in_the_error(telegram: FakeTelegram) -> None:
    provider = make_provider(token="111:wrong-token-value", base_url=telegram.service.base_url)
    with pytest.raises(PermanentActionError) as caught:
        send(provider)
    assert "wrong-token-value" not in str(caught.value)


def test_no_answer_in_time_is_retryable(bot: TelegramProvider, telegram: FakeTelegram) -> None:
    telegram.hang(5)
    try:
        with pytest.raises(RetryableActionError) as caught:
            send(bot, timeout=0.2)
    finally:
        telegram.service.release()
    assert "did not answer within 0.2 s" in str(caught.value)


def test_an_unreachable_api_is_retryable_and_keeps_the_token_out() -> None:
    provider = make_provider(token="333:unreachable-token", base_url="http://127.0.0.1:9")
    with pytest.raises(RetryableActionError) as caught:
        send(provider)
    assert "cannot reach Telegram" in str(caught.value)
    assert "unreachable-token" not in str(caught.value)


def test_without_a_token_replies_say_what_is_missing() -> None:
    provider = make_provider(token="")
    assert provider.reply_problem() == "channel 'telegram' needs the bot's token to send replies"
    with pytest.raises(PermanentActionError):
        send(provider)


def test_a_conversation_without_a_chat_cannot_be_answered(bot: TelegramProvider) -> None:
    reply = Reply(Conversation(id="x"), Client(id="not-a-chat"), "hi")
    with pytest.raises(PermanentActionError) as caught:
        send(bot, reply)
    assert "no Telegram chat" in str(caught.value)


def test_the_dry_run_says_what_would_be_sent(bot: TelegramProvider) -> None:
    assert bot.describe_reply(REPLY) == (
        "Telegram sendMessage to chat 111: 'Hi Ann, an agent will answer shortly.'"
    )


def test_replies_are_paced_by_telegram_s_limits() -> None:
    limits = TelegramProvider.reply_limits
    assert (limits["conversation"].count, limits["conversation"].period) == (1, 1.0)
    assert (limits["service"].count, limits["service"].period) == (30, 1.0)


def test_flood_control_of_years_makes_no_later_flood_of_another_chat_bot_wide(
    bot: TelegramProvider, telegram: FakeTelegram
) -> None:
    """A chat throttled "for years" pauses for an hour (MAX_RETRY_AFTER); once that hour is
    over, another user's flood control is their chat's own, not the whole bot's."""
    other = Reply(Conversation(id="telegram:222", external_id="222"), Client(id="222"), "Hi")
    telegram.flood(retry_after=10**12, chat=111)
    telegram.flood(retry_after=2, chat=222)

    async def scenario() -> list[str]:
        scopes = []
        for reply in (REPLY, other):
            with pytest.raises(RetryableActionError) as caught:
                await bot.send_reply(reply, timeout=5)
            scopes.append(caught.value.scope)
            await bot.aclose()  # (no timer of the session's moves the virtual clock)
            await asyncio.sleep(MAX_RETRY_AFTER + 1)
        return scopes

    assert run_virtual(scenario(), io_grace=0.2) == ["destination", "destination"]
