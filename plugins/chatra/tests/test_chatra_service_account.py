"""The Chatra account a channel's pauses are kept under (``service_account``): the same for
channels with the same API keys and base URL, another for other keys, and never a key."""

from __future__ import annotations

from rulekit.channels import ChannelContext
from rulekit.directory import Directory

from rulekit_chatra import ChatraProvider, ChatraSettings

PUBLIC = "pubKEY-7Qx2Lm9Rt4"
SECRET = "s3cret-KEY-Zp8Wn5Vb1"
BASE_URL = "https://app.chatra.io/api"


def account(channel: str = "online-chat", **settings: str) -> str:
    keys = {"public_key": PUBLIC, "secret_key": SECRET, "base_url": BASE_URL, **settings}
    context = ChannelContext(channel, ChatraSettings(**keys), Directory([], []))
    return ChatraProvider(context).service_account


def test_the_account_holds_neither_key():
    found = account()
    for secret in (PUBLIC, SECRET, PUBLIC.lower(), SECRET.lower()):
        assert secret not in found
        assert secret not in found.lower()
    # nor a piece of a key long enough to say something of it
    for key in (PUBLIC, SECRET):
        pieces = {key[i : i + 6].lower() for i in range(len(key) - 5)}
        assert not any(piece in found.lower() for piece in pieces), found


def test_channels_with_the_same_keys_share_an_account():
    assert account("online-chat") == account("shop-chat")
    assert account("shop-chat", base_url=BASE_URL + "/") == account()  # the same URL
    assert account().startswith("chatra:")


def test_other_keys_or_another_base_url_are_another_account():
    assert account(public_key="otherPUB-4Kd8Hs2") != account()
    assert account(base_url="http://127.0.0.1:8080/api") != account()


def test_without_keys_a_channel_is_an_account_of_its_own():
    context = ChannelContext("online-chat", ChatraSettings(), Directory([], []))
    assert ChatraProvider(context).service_account == "online-chat"
