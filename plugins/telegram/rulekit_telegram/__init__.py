"""rulekit-telegram: a Telegram bot as a rulekit channel (``telegram``).

Modules, one concept each:

* :mod:`~rulekit_telegram.settings` — the channel's settings model;
* :mod:`~rulekit_telegram.update` — Telegram's ``Update`` JSON, read tolerantly into dataclasses;
* :mod:`~rulekit_telegram.normalize` — normalized events from an update and conversation state;
* :mod:`~rulekit_telegram.botapi` — the Bot API client replies and polling go through;
* :mod:`~rulekit_telegram.polling` — durable long polling (``getUpdates``);
* :mod:`~rulekit_telegram.provider` — the provider tying them together;
* :mod:`~rulekit_telegram.commands` — ``rulekit telegram set-webhook``;
* :mod:`~rulekit_telegram.plugin` — the hook implementations rulekit loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["TelegramProvider", "TelegramSettings", "__version__"]

if TYPE_CHECKING:
    from rulekit_telegram.provider import TelegramProvider
    from rulekit_telegram.settings import TelegramSettings


def __getattr__(name: str) -> Any:
    # Lazy, so loading the plugin entry point (for `rulekit --help`) stays cheap.
    if name == "TelegramProvider":
        from rulekit_telegram.provider import TelegramProvider

        return TelegramProvider
    if name == "TelegramSettings":
        from rulekit_telegram.settings import TelegramSettings

        return TelegramSettings
    raise AttributeError(name)
