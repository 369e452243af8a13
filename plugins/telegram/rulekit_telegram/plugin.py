"""The plugin object rulekit loads (entry point ``telegram`` in the ``rulekit`` group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rulekit import hookimpl

if TYPE_CHECKING:
    import click
    from rulekit.registry import ProviderRegistry


@hookimpl
def rulekit_register_providers(register: ProviderRegistry) -> None:
    """Register the ``telegram-bot`` provider (default channel ``telegram``)."""
    # Imported here, not at module level: `rulekit --help` loads this module to look for
    # commands, and should not pay for pydantic and aiohttp.
    from .provider import TelegramProvider

    register.add(TelegramProvider)


@hookimpl
def rulekit_register_commands(cli: click.Group) -> None:
    """Add ``rulekit telegram`` (``set-webhook``)."""
    from .commands import telegram_group

    cli.add_command(telegram_group)
