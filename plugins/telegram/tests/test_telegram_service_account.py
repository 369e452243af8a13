"""The bot a channel's pauses are kept under (``service_account``): the same for channels on
one token and base URL, another for another bot, and never the token."""

from __future__ import annotations

from rulekit.channels import ChannelContext
from rulekit.directory import Directory

from rulekit_telegram import TelegramProvider, TelegramSettings

TOKEN = "123456789:AAHx-Secret_tokenPart0123456789abcd"
BASE_URL = "https://api.telegram.org"


def account(channel: str = "telegram", **settings: str) -> str:
    given = {"token": TOKEN, "base_url": BASE_URL, **settings}
    context = ChannelContext(channel, TelegramSettings(**given), Directory([], []))
    return TelegramProvider(context).service_account


def test_the_account_holds_no_part_of_the_token():
    found = account()
    bot_id, secret = TOKEN.split(":")
    assert TOKEN not in found and secret not in found and bot_id not in found
    pieces = {secret[i : i + 6].lower() for i in range(len(secret) - 5)}
    assert not any(piece in found.lower() for piece in pieces), found


def test_channels_on_one_bot_share_an_account():
    assert account("telegram") == account("telegram-shop")
    assert account().startswith("telegram-bot:")


def test_another_token_or_base_url_is_another_account():
    assert account(token="987654321:BBOther_token0123456789abcdefghij") != account()
    assert account(base_url="http://127.0.0.1:8081") != account()


def test_without_a_token_a_channel_is_an_account_of_its_own():
    context = ChannelContext("telegram", TelegramSettings(), Directory([], []))
    assert TelegramProvider(context).service_account == "telegram"
