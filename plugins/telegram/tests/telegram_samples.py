"""Providers of the ``telegram`` channel built the way rulekit builds them, and users."""

from __future__ import annotations

import json
from typing import Any

from rulekit.channels import ChannelContext
from rulekit.directory import Directory
from rulekit.testing.telegram_updates import TelegramUser

from rulekit_telegram import TelegramProvider, TelegramSettings

CHANNEL = "telegram"
SECRET = "tg-Secret_0123456789"

ANN = TelegramUser(111, "Ann", "Lee", username="ann_lee", language_code="en")
BORIS = TelegramUser(222, "Boris")


def make_provider(**settings: Any) -> TelegramProvider:
    """A provider of the ``telegram`` channel; new conversations land in ``support``."""
    settings.setdefault("default_group", "support")
    settings.setdefault("webhook_secret", SECRET)
    context = ChannelContext(CHANNEL, TelegramSettings(**settings), Directory([], ["support"]))
    return TelegramProvider(context)


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()
