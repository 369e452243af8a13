"""``telegram``: send a message to a Telegram chat (``sendMessage``)."""

from __future__ import annotations

import html
import re
from typing import Any, Literal

from pydantic import Field, SecretStr

from rulekit.actions.base import Action, ActionContext
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry

_MDV2_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")


def escape_html(text: str) -> str:
    """Escape a value for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def escape_markdown_v2(text: str) -> str:
    """Escape a value for Telegram's MarkdownV2 parse mode (every special character)."""
    return _MDV2_SPECIAL.sub(r"\\\1", text)


class TelegramIntegration(StrictModel):
    token: SecretStr | None = Field(None, description="The bot token from @BotFather, from ${ENV}.")
    base_url: str = Field("https://api.telegram.org/bot", description="The Bot API's base URL.")


class TelegramParams(StrictModel):
    chat_id: str | int = Field(description="A chat id, or @channelusername.")
    text: str = Field(min_length=1, description="The message (over 4096 characters: truncated).")
    parse_mode: Literal["none", "HTML", "MarkdownV2"] = Field(
        "none", description="none (plain text), HTML or MarkdownV2."
    )


class Telegram(Action):
    name = "telegram"
    description = "send a message to a Telegram chat"
    Params = TelegramParams
    integration = "telegram"
    Integration = TelegramIntegration
    markup_fields = ("text",)

    @classmethod
    def escaper(cls, params: dict[str, Any]):
        mode = params.get("parse_mode")
        return {"HTML": escape_html, "MarkdownV2": escape_markdown_v2}.get(str(mode))

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if self.settings is None:
            return "Telegram is not configured"
        token = self.settings.token  # type: ignore[attr-defined]
        if token is None or not token.get_secret_value():
            return "the Telegram token is empty"
        return None

    def destination(self, params: TelegramParams) -> str:  # type: ignore[override]
        return f"telegram:{params.chat_id}"

    def describe(self, params: TelegramParams, context: ActionContext) -> str:  # type: ignore[override]
        mode = "" if params.parse_mode == "none" else f" ({params.parse_mode})"
        return f"send Telegram message to chat {params.chat_id}{mode}: {params.text!r}"


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Telegram)
