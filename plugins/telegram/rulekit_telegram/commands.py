"""``rulekit telegram``: commands for a bot channel (``set-webhook URL``).

Only click is imported here (not even asyncio); the config, the plugins and the HTTP client
load when a command runs, so ``rulekit --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .provider import TelegramProvider


@click.group("telegram")
def telegram_group() -> None:
    """Telegram bot channels (the rulekit-telegram plugin)."""


@telegram_group.command("set-webhook")
@click.argument("url")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="RULEKIT_CONFIG",
    help="The config file (default: $RULEKIT_CONFIG).",
)
@click.option("--channel", help="The channel to set it for (default: the only telegram-bot one).")
def set_webhook_command(url: str, config_path: str | None, channel: str | None) -> None:
    """Tell Telegram to post the bot's updates to URL (setWebhook), with the channel's
    webhook_secret as the secret token.

    URL is where Telegram reaches this daemon, https://<your host> (with the path of a
    reverse proxy's prefix, if any): the channel's path and secret are added from the config.
    Do not write the secret in the command: every user of the machine can read a command
    line, and the shell keeps it in its history.
    """
    from rulekit.cli.main import reports_errors

    reports_errors(_set_webhook)(url, config_path, channel)


def _set_webhook(url: str, config_path: str | None, channel: str | None) -> None:
    import asyncio

    from rulekit.errors import ConfigError

    from .botapi import BotAPIError, BotUnreachable

    provider = _provider(config_path, channel)
    secret = provider.settings.webhook_secret
    if secret is None or not secret.get_secret_value():
        raise ConfigError(f"channel {provider.channel!r} has no webhook_secret")
    if provider.settings.token is None:
        raise ConfigError(f"channel {provider.channel!r} has no token")
    if secret.get_secret_value() in url:
        click.echo(
            "warning: the URL holds the channel's webhook_secret, which other users of this "
            "machine can read in its process list and your shell keeps in its history: give "
            "https://<your host> only (the secret is taken from the config); consider a new "
            "webhook_secret",
            err=True,
        )
    target = webhook_url(url, provider.channel, secret.get_secret_value())
    params: dict[str, Any] = {
        "url": target,
        "secret_token": secret.get_secret_value(),
        "allowed_updates": ["message", "edited_message"],
    }
    hidden = secret.get_secret_value()
    try:
        asyncio.run(_call(provider, "setWebhook", params))
    except (BotAPIError, BotUnreachable) as exc:
        raise ConfigError(f"setWebhook failed: {exc}".replace(hidden, SHOWN_SECRET)) from None
    shown = target.replace(hidden, SHOWN_SECRET)
    click.echo(f"channel {provider.channel}: Telegram now posts updates to {shown}")
    if provider.settings.updates == "polling":
        click.echo(
            "note: the channel is set to `updates: polling`; Telegram refuses getUpdates while a "
            "webhook is set: set `updates: webhook`",
            err=True,
        )


SHOWN_SECRET = "<webhook_secret>"
"""What the command's output writes for the channel's webhook secret."""


def webhook_url(url: str, channel: str, secret: str) -> str:
    """The full webhook URL: ``url`` as given when it already ends with the channel's path,
    else the channel's path appended to it."""
    from rulekit.errors import ConfigError

    if not url.startswith("https://") and not url.startswith("http://"):
        shown = url.replace(secret, SHOWN_SECRET) if secret else url
        raise ConfigError(f"{shown!r} is not an http(s) URL")
    path = f"/webhooks/{channel}/{secret}"
    base = url.rstrip("/")
    return base if base.endswith(path) else base + path


async def _call(provider: TelegramProvider, method: str, params: dict[str, Any]) -> Any:
    try:
        return await provider.api().call(method, params, timeout=30)
    finally:
        await provider.aclose()


def _provider(config_path: str | None, channel: str | None) -> TelegramProvider:
    from rulekit.channels import ChannelContext
    from rulekit.config import find_config_path
    from rulekit.errors import ConfigError
    from rulekit.loading import open_config

    from .provider import TelegramProvider

    path = find_config_path(config_path)
    if path is None:
        raise ConfigError("no config: pass --config or set RULEKIT_CONFIG")
    _, config = open_config(str(path))
    bots = {
        name: configured
        for name, configured in config.channels.items()
        if configured.provider == TelegramProvider.name
    }
    if channel is not None and channel not in bots:
        known = ", ".join(sorted(bots)) or "none"
        raise ConfigError(f"no telegram-bot channel {channel!r} (configured: {known})")
    if channel is None:
        if len(bots) != 1:
            names = ", ".join(sorted(bots))
            raise ConfigError(
                f"choose the channel with --channel ({names})"
                if bots
                else "no telegram-bot channel"
            )
        channel = next(iter(bots))
    settings = bots[channel].settings
    return TelegramProvider(ChannelContext(channel, settings, config.directory))  # type: ignore[arg-type]
