"""The docs' Telegram examples run: the configuration block loads, the set-webhook command
does what the text says."""

from __future__ import annotations

import shlex
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.config import load_config
from rulekit.plugins import load_plugins
from rulekit.testing.fake_telegram import FakeTelegram

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _block(name: str, kind: str, after: str) -> str:
    text = (DOCS / name).read_text(encoding="utf-8")
    section = text[text.index(after) :]
    return section.split(f"```{kind}\n", 1)[1].split("```", 1)[0]


def test_the_configuration_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "rulekit.yaml"
    path.write_text(
        "groups: [support]\n" + _block("configuration.md", "yaml", "### `telegram-bot`")
    )
    env = {"TELEGRAM_BOT_TOKEN": "42:abc", "TELEGRAM_WEBHOOK_SECRET": "s3cret_-"}
    settings = load_config(path, load_plugins(), environ=env).channels["telegram"].settings
    assert settings.updates == "webhook"  # type: ignore[attr-defined]
    assert settings.close_after == timedelta(minutes=30)  # type: ignore[attr-defined]


def test_the_set_webhook_example_does_what_the_text_says(tmp_path: Path) -> None:
    [line] = _block("plugins.md", "sh", "### Connecting a bot").strip().splitlines()
    with FakeTelegram(token="42:abc") as telegram:
        config = tmp_path / "rulekit.yaml"
        config.write_text(
            "channels:\n"
            "  telegram:\n"
            "    provider: telegram-bot\n"
            "    token: '42:abc'\n"
            f"    base_url: {telegram.service.base_url}\n"
            "    webhook_secret: s3cret_-\n"
        )
        args = [str(config) if a == "rulekit.yaml" else a for a in shlex.split(line)[1:]]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert telegram.webhook is not None
        assert telegram.webhook["url"] == "https://rulekit.example.com/webhooks/telegram/s3cret_-"
        assert telegram.webhook["secret_token"] == "s3cret_-"


def test_the_channel_timers_example_is_what_the_provider_does() -> None:
    """The plugins.md example of channel timers, run on the Telegram provider it describes:
    the same timers asked for, the same close when due."""
    import json

    from rulekit.channels import ChannelContext
    from rulekit.event import Event
    from rulekit.store.base import State
    from rulekit.store.memory import MemoryStore
    from rulekit.testing.telegram_updates import Updates
    from telegram_samples import ANN, make_provider

    from rulekit_telegram.provider import TelegramProvider

    namespace = {"Provider": TelegramProvider, "Event": Event, "State": State}
    exec(_block("plugins.md", "python", "**Channel timers.**"), namespace)
    shipped = make_provider()
    context = ChannelContext(shipped.channel, shipped.settings, shipped.directory)
    documented = namespace["TelegramProvider"](context)  # type: ignore[operator]
    updates = Updates()
    for provider in (documented, shipped):
        store = MemoryStore()
        with store.transaction() as state:
            (created,) = provider.parse(json.dumps(updates.message(ANN, "Hi")).encode(), state)
            (timer,) = provider.channel_timers(created)
            (closed,) = provider.timer_due(timer, state)
        assert (timer.name, closed.event, closed.id) == (
            "close_after",
            "closed",
            f"telegram:idle:111:{updates.date}",
        )
