"""The Telegram channel's settings: what an admin writes under ``channels: {telegram: ...}``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from rulekit.channels import ChannelSettings
from rulekit.models import Duration, parse_duration

DEFAULT_BASE_URL = "https://api.telegram.org"

SECRET_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
"""The characters Telegram allows in a webhook's ``secret_token``."""


def is_secret_token(value: str) -> bool:
    """Whether ``value`` can be Telegram's ``secret_token``: 1 to 256 of A-Z a-z 0-9 _ -."""
    return 0 < len(value) <= 256 and set(value) <= SECRET_TOKEN_CHARS


class TelegramSettings(ChannelSettings):
    """Settings of a channel served by the ``telegram-bot`` provider.

    ``token`` is the bot's token from @BotFather. Updates arrive by ``webhook`` (Telegram posts
    them to ``/webhooks/<channel>/<webhook_secret>`` with the same secret in its
    ``X-Telegram-Bot-Api-Secret-Token`` header; ``rulekit telegram set-webhook URL`` registers
    it) or by long ``polling`` when the daemon has no public URL. A conversation nobody wrote
    in for ``close_after`` is ``closed``.
    """

    token: SecretStr | None = Field(None, description="The bot token from @BotFather.")
    updates: Literal["webhook", "polling"] = Field(
        "webhook", description="How updates arrive: webhook, or long polling (getUpdates)."
    )
    close_after: Duration = Field(
        default_factory=lambda: parse_duration("30m"),
        description="A conversation idle this long is closed.",
    )
    base_url: str = Field(DEFAULT_BASE_URL, description="The Bot API's base URL.")

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``${TELEGRAM_BOT_TOKEN}`` of an unset variable reads as "": that is "not configured".
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram sends it back in a header, and only accepts these characters.
        if value is not None and value.get_secret_value():
            if not is_secret_token(value.get_secret_value()):
                raise ValueError(
                    "must be 1 to 256 characters A-Z, a-z, 0-9, _ and - (Telegram's secret_token)"
                )
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")
