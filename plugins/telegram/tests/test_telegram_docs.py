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
