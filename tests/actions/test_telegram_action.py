"""The telegram action against a fake Bot API, through python-telegram-bot's real Bot."""

from __future__ import annotations

import asyncio
import logging
import traceback

import pytest
from action_helpers import make_context, run

from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.actions.telegram_text import ELLIPSIS
from rulekit.errors import MAX_RETRY_AFTER, ActionError, PermanentActionError, RetryableActionError
from rulekit.event import Event
from rulekit.testing.clock import run_virtual
from rulekit.testing.fake_telegram import FakeTelegram, error


def telegram_action(fake: FakeTelegram, **options) -> Telegram:
    return Telegram(TelegramIntegration(token=fake.token, base_url=fake.base_url), **options)


def send(action: Telegram, *params: TelegramParams):
    async def scenario():
        return [await action.execute(p, make_context()) for p in params]

    return run(action, scenario)


def failure(action: Telegram, params: TelegramParams) -> ActionError:
    with pytest.raises(ActionError) as caught:
        send(action, params)
    return caught.value


def test_sends_the_message_and_returns_its_id(fake_telegram):
    action = telegram_action(fake_telegram)
    results = send(
        action,
        TelegramParams(chat_id=-1001, text="<b>Mia</b> reopened", parse_mode="HTML"),
        TelegramParams(chat_id="42", text="plain *text*"),
    )
    assert results == [
        {"message_id": 1, "chat_id": -1001, "truncated": False},
        {"message_id": 2, "chat_id": 42, "truncated": False},
    ]
    token = fake_telegram.token
    # one bot, initialized once: a single getMe, then the messages
    assert [r.path for r in fake_telegram.requests] == [
        f"/bot{token}/getMe",
        f"/bot{token}/sendMessage",
        f"/bot{token}/sendMessage",
    ]
    first, second = (m.request.data for m in fake_telegram.messages())
    assert first == {"chat_id": "-1001", "text": "<b>Mia</b> reopened", "parse_mode": "HTML"}
    assert second == {"chat_id": "42", "text": "plain *text*"}  # parse_mode none: not sent


def test_a_long_text_is_truncated_not_rejected(fake_telegram):
    action = telegram_action(fake_telegram)
    text = "*Order* " + "x\\." * 3000
    [result] = send(action, TelegramParams(chat_id=7, text=text, parse_mode="MarkdownV2"))
    assert result["truncated"] is True
    [message] = fake_telegram.messages(accepted=True)
    assert message.text.endswith(ELLIPSIS) and len(message.text) <= 4096
    assert message.text.startswith("*Order* x\\.")


def test_the_bot_is_reused_across_calls_and_closed(fake_telegram):
    action = telegram_action(fake_telegram)
    params = TelegramParams(chat_id=1, text="hi")

    async def scenario():
        await action.execute(params, make_context())
        bot = action._bot
        await action.execute(params, make_context())
        assert action._bot is bot
        await action.aclose()
        assert action._bot is None
        await action.execute(params, make_context())  # usable again after aclose

    run(action, scenario)
    assert len(fake_telegram.calls("getMe")) == 2


def test_flood_control_is_retryable_with_its_delay(fake_telegram):
    fake_telegram.flood(retry_after=3, chat=5)
    exc = failure(telegram_action(fake_telegram), TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, RetryableActionError)
    assert (exc.retry_after, exc.status, exc.scope) == (3.0, 429, "destination")
    assert "Flood control" in exc.message


def test_flood_control_of_years_pauses_the_chat_for_an_hour_at_most(fake_telegram):
    fake_telegram.flood(retry_after=10**12, chat=5)
    exc = failure(telegram_action(fake_telegram), TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, RetryableActionError)
    assert exc.retry_after == MAX_RETRY_AFTER


def test_flood_control_on_two_chats_at_once_pauses_the_whole_bot(fake_telegram):
    action = telegram_action(fake_telegram)
    fake_telegram.flood(retry_after=2, chat=5)
    fake_telegram.flood(retry_after=2, chat=6)
    errors = []

    async def scenario():
        for chat in (5, 6):
            try:
                await action.execute(TelegramParams(chat_id=chat, text="hi"), make_context())
            except RetryableActionError as exc:
                errors.append(exc.scope)

    run(action, scenario)
    assert errors == ["destination", "service"]


def test_flood_control_on_get_me_is_bot_wide(fake_telegram):
    fake_telegram.flood(retry_after=4, method="getMe")
    exc = failure(telegram_action(fake_telegram), TelegramParams(chat_id=5, text="hi"))
    assert (type(exc), exc.retry_after, exc.scope) == (RetryableActionError, 4.0, "service")
    assert fake_telegram.calls("sendMessage") == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(fake_telegram, status):
    fake_telegram.server_error(status)
    exc = failure(telegram_action(fake_telegram), TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, RetryableActionError) and exc.status == status


@pytest.mark.parametrize(
    ("response", "status", "words"),
    [
        (error(400, "Bad Request: chat not found"), 400, "chat not found"),
        (error(403, "Forbidden: bot was blocked by the user"), 403, "bot was blocked"),
        (error(413, "Request Entity Too Large"), 413, "Too Large"),
    ],
)
def test_client_errors_are_permanent_with_the_service_message(
    fake_telegram, response, status, words
):
    fake_telegram.fail(response)
    exc = failure(telegram_action(fake_telegram), TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, PermanentActionError)
    assert exc.status == status and words.lower() in exc.message.lower()


def test_an_unknown_chat_is_permanent():
    with FakeTelegram(chats=["1"]) as fake:
        exc = failure(telegram_action(fake), TelegramParams(chat_id=2, text="hi"))
    assert isinstance(exc, PermanentActionError)
    assert exc.message == "Telegram: Chat not found"  # as python-telegram-bot words it


def test_a_bad_token_is_permanent_and_never_shown(fake_telegram):
    action = Telegram(
        TelegramIntegration(token="999999:Wrong-Token-Value", base_url=fake_telegram.base_url)
    )
    exc = failure(action, TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, PermanentActionError) and exc.status == 401
    assert "rejected" in exc.message and "Wrong-Token-Value" not in exc.message
    assert "Wrong-Token-Value" not in "".join(traceback.format_exception(exc))


def test_a_hanging_api_times_out_as_retryable(fake_telegram):
    action = telegram_action(fake_telegram, timeout=0.5)
    fake_telegram.hang(3600)  # answered only when the fake stops

    async def scenario() -> tuple[RetryableActionError, float]:
        try:
            with pytest.raises(RetryableActionError) as caught:
                await action.execute(TelegramParams(chat_id=5, text="hi"), make_context())
            return caught.value, asyncio.get_running_loop().time()
        finally:
            await action.aclose()

    # on virtual time: the action gives up at its own timeout exactly, not at the SDK's 5 s
    exc, gave_up_at = run_virtual(scenario(), io_grace=0.2)
    assert "Telegram did not answer within 0.5 s" in exc.message
    assert gave_up_at == pytest.approx(0.5)


def test_a_refused_connection_is_retryable():
    with FakeTelegram() as fake:
        integration = TelegramIntegration(token=fake.token, base_url=fake.base_url)
    exc = failure(Telegram(integration, timeout=2), TelegramParams(chat_id=5, text="hi"))
    assert isinstance(exc, RetryableActionError) and exc.status is None


def test_the_token_never_leaks_into_errors_logs_or_reprs(fake_telegram, caplog):
    caplog.set_level(logging.DEBUG)
    token = fake_telegram.token
    action = telegram_action(fake_telegram, timeout=0.5)
    fake_telegram.flood(retry_after=1)
    fake_telegram.server_error()
    fake_telegram.fail(error(400, "Bad Request: chat not found"))
    fake_telegram.hang(3)
    seen: list[str] = [repr(action), repr(action.settings), str(action.settings)]

    async def scenario():
        for _ in range(5):
            try:
                result = await action.execute(TelegramParams(chat_id=5, text="hi"), make_context())
                seen.append(repr(result))
            except ActionError as exc:
                seen.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    run(action, scenario)
    bad = Telegram(
        TelegramIntegration(token="1:Another-Secret-Token", base_url=fake_telegram.base_url)
    )
    exc = failure(bad, TelegramParams(chat_id=5, text="hi"))
    seen.extend([str(exc), "".join(traceback.format_exception(exc))])
    text = "\n".join(seen) + caplog.text
    assert "sendMessage" in caplog.text  # the libraries did log requests
    secret = token.split(":")[1]
    assert secret not in text and "Another-Secret-Token" not in text


def test_unavailable_says_what_is_missing():
    assert Telegram(None).unavailable() == "Telegram is not configured"
    assert Telegram(TelegramIntegration(token="")).unavailable() == "the Telegram token is empty"
    assert Telegram(TelegramIntegration(token="1:x")).unavailable() is None
    with pytest.raises(PermanentActionError, match="Telegram is not configured"):
        send(Telegram(None), TelegramParams(chat_id=1, text="hi"))


def test_pacing_keys_name_chat_group_and_bot():
    action = Telegram(TelegramIntegration(token="1:x"))
    private = [p.key for p in action.pacing(TelegramParams(chat_id=42, text="x"))]
    group = action.pacing(TelegramParams(chat_id="-100200", text="x"))
    assert private == ["telegram:42", "telegram"]
    assert [(p.key, p.limit.count, p.limit.period, p.scope) for p in group] == [
        ("telegram:-100200", 1, 1.0, "destination"),
        ("telegram:-100200:minute", 20, 60.0, "destination"),
        ("telegram", 30, 1.0, "service"),
    ]


def test_describe_shows_the_truncated_text():
    action = Telegram(TelegramIntegration(token="1:x"))
    short = action.describe(TelegramParams(chat_id=1, text="hi", parse_mode="HTML"), make_context())
    assert short == "send Telegram message to chat 1 (HTML): 'hi'"
    long = action.describe(TelegramParams(chat_id=1, text="y" * 5000), make_context())
    assert "(truncated to 4096 characters)" in long and "y" * 5000 not in long


def test_flood_control_of_years_makes_no_later_flood_of_another_chat_bot_wide(fake_telegram):
    """A chat throttled "for years" pauses for an hour (MAX_RETRY_AFTER); once that hour is
    over, another chat's flood control is that chat's own, not the whole bot's (which would
    pause every chat)."""
    action = telegram_action(fake_telegram)
    fake_telegram.flood(retry_after=10**12, chat=5)
    fake_telegram.flood(retry_after=2, chat=6)

    async def scenario() -> list[str]:
        scopes = []
        for chat in (5, 6):
            with pytest.raises(RetryableActionError) as caught:
                await action.execute(TelegramParams(chat_id=chat, text="hi"), make_context())
            scopes.append(caught.value.scope)
            await action.aclose()  # (no timer of the client's moves the virtual clock)
            await asyncio.sleep(MAX_RETRY_AFTER + 1)
        return scopes

    assert run_virtual(scenario(), io_grace=0.2) == ["destination", "destination"]


def test_a_group_upgraded_to_a_supergroup_is_followed_to_its_new_id(fake_telegram):
    # Telegram refuses the old id for ever (400 with parameters.migrate_to_chat_id); retrying
    # it was a storm of refusals, and the rule's messages never arrived again
    fake_telegram.migrate(-1001, -100777)
    action = telegram_action(fake_telegram)
    results = send(
        action,
        TelegramParams(chat_id=-1001, text="Mia reopened the chat"),
        TelegramParams(chat_id="-1001", text="Mia wrote again"),
    )
    assert results == [
        {"message_id": 1, "chat_id": -100777, "truncated": False, "migrated_from": -1001},
        {"message_id": 2, "chat_id": -100777, "truncated": False, "migrated_from": "-1001"},
    ]
    sent = [(m.chat_id, m.text, m.status) for m in fake_telegram.messages()]
    assert sent == [
        ("-1001", "Mia reopened the chat", 400),
        ("-100777", "Mia reopened the chat", 200),
        ("-100777", "Mia wrote again", 200),  # the new id remembered: no refusal first
    ]


def test_a_group_that_moves_again_while_followed_is_a_permanent_failure(fake_telegram):
    fake_telegram.migrate(-1001, -100777)
    fake_telegram.migrate(-100777, -100888)
    action = telegram_action(fake_telegram)
    problem = failure(action, TelegramParams(chat_id=-1001, text="hi"))
    assert isinstance(problem, PermanentActionError)
    assert "-100888" in str(problem)
    assert len(fake_telegram.messages()) == 2


def test_a_message_goes_to_the_forum_topic_named(fake_telegram):
    # a support team's forum supergroup: without the topic, every notice landed in General
    action = telegram_action(fake_telegram)
    params = TelegramParams(chat_id=-1001, text="Mia reopened", message_thread_id=42)
    send(action, params, TelegramParams(chat_id=-1001, text="to General"))
    first, second = (m.request.data for m in fake_telegram.messages())
    assert first == {"chat_id": "-1001", "text": "Mia reopened", "message_thread_id": "42"}
    assert "message_thread_id" not in second
    assert "chat -1001, topic 42:" in action.describe(params, make_context())


def test_a_destination_that_renders_empty_is_a_plan_error_not_a_dead_letter(build_engine) -> None:
    """A Telegram chat id or a Slack channel whose template renders nothing was planned (the
    dry run saw nothing wrong) and dead-lettered by the service ("chat not found"); it is now
    refused as the plan is made, as an empty text is, so `rulekit test` and the daemon's trace
    say the same thing before anything is sent."""
    engine = build_engine(
        "- name: r\n  on: {channel: online-chat, event: created}\n  do:\n"
        "    - telegram: {chat_id: \"{{ client.custom.chat or '' }}\", text: hi}\n"
        "    - slack: {channel: \"{{ client.custom.room or ' ' }}\", text: hi}\n"
        "    - telegram: {chat_id: -100, text: hi}\n",
        "channels: {online-chat: {provider: webhook}}\n",
    )
    plan = engine.evaluate(
        Event(channel="online-chat", event="created", conversation={"id": "c"}), explain=True
    )
    assert [(p.action, p.params["chat_id"]) for p in plan] == [("telegram", -100)]
    assert plan.errors == [
        "rule 'r': telegram: chat_id: the chat id is empty",
        "rule 'r': slack: channel: the channel is empty",
    ]
