"""The plugin as rulekit sees it: entry point, registration, settings in a config file, the
``rulekit telegram`` command."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import pytest
import rulekit
from click.testing import CliRunner
from pydantic import ValidationError
from rulekit.cli.main import cli
from rulekit.config import load_config
from rulekit.errors import ValidationErrors
from rulekit.plugins import load_plugins
from rulekit.testing.fake_telegram import FakeTelegram, error

from rulekit_telegram import TelegramProvider, TelegramSettings


def test_the_entry_point_registers_the_telegram_bot_provider() -> None:
    plugins = load_plugins()
    assert plugins.providers["telegram-bot"] is TelegramProvider
    assert plugins.providers.entries["telegram-bot"].plugin == "telegram"
    assert plugins.source("telegram").startswith("rulekit-telegram ")


def test_without_a_config_the_plugin_offers_the_telegram_channel() -> None:
    config = load_config(None, load_plugins())
    assert config.channels["telegram"].provider == "telegram-bot"
    assert config.channels["online-chat"].provider == "chatra"


def test_settings_defaults() -> None:
    settings = TelegramSettings()
    assert settings.token is None and settings.webhook_secret is None
    assert settings.updates == "webhook"
    assert settings.close_after == timedelta(minutes=30)
    assert settings.base_url == "https://api.telegram.org"


def test_a_config_file_configures_the_channel(tmp_path: Path) -> None:
    path = tmp_path / "rulekit.yaml"
    path.write_text(
        "groups: [support]\n"
        "channels:\n"
        "  telegram:\n"
        "    provider: telegram-bot\n"
        "    token: ${BOT_TOKEN}\n"
        "    webhook_secret: abc_DEF-123\n"
        "    updates: polling\n"
        "    close_after: 2h\n"
        "    default_group: support\n"
    )
    settings = (
        load_config(path, load_plugins(), environ={"BOT_TOKEN": "42:token-value"})
        .channels["telegram"]
        .settings
    )
    assert isinstance(settings, TelegramSettings)
    assert settings.token is not None and settings.token.get_secret_value() == "42:token-value"
    assert (settings.updates, settings.close_after) == ("polling", timedelta(hours=2))
    assert "token-value" not in repr(settings) and "abc_DEF" not in repr(settings)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("webhook_secret: has/slash", "A-Z, a-z, 0-9, _ and -"),
        ("webhook_secret: " + "a" * 257, "1 to 256 characters"),
        ("updates: push", "'webhook' or 'polling'"),
        ("close_after: 0s", "a duration must be positive"),
        ("base_url: api.telegram.org", "is not an http(s) URL"),
        ("tokn: x", "tokn"),
    ],
)
def test_a_bad_setting_is_an_error_with_file_and_line(tmp_path: Path, line: str, said: str) -> None:
    path = tmp_path / "rulekit.yaml"
    path.write_text(f"channels:\n  telegram:\n    provider: telegram-bot\n    {line}\n")
    with pytest.raises(ValidationErrors) as caught:
        load_config(path, load_plugins(), environ={})
    assert f"{path}:4" in str(caught.value)
    assert said in str(caught.value)


def test_an_empty_token_is_not_configured() -> None:
    assert TelegramSettings(token=" ").token is None
    with pytest.raises(ValidationError):
        TelegramSettings(webhook_secret="spaces are not allowed")


def test_the_command_is_listed_and_explains_itself() -> None:
    result = CliRunner().invoke(cli, ["telegram", "set-webhook", "--help"])
    assert result.exit_code == 0
    assert "setWebhook" in result.output
    assert "telegram" in CliRunner().invoke(cli, ["--help"]).output


def test_set_webhook_appends_the_channel_s_path_and_reports_failures(tmp_path: Path) -> None:
    with FakeTelegram(token="5:tok") as telegram:
        path = tmp_path / "rulekit.yaml"
        path.write_text(
            "channels:\n"
            "  support-bot:\n"
            "    provider: telegram-bot\n"
            f"    token: '5:tok'\n"
            f"    base_url: {telegram.service.base_url}\n"
            "    webhook_secret: s3cret\n"
        )
        run = CliRunner().invoke
        result = run(cli, ["telegram", "set-webhook", "https://rk.example.com/", "-c", "x"])
        assert result.exit_code == 2  # click's usage error: there is no -c
        result = run(
            cli, ["telegram", "set-webhook", "https://rk.example.com/", "--config", str(path)]
        )
        assert result.exit_code == 0, result.output
        assert telegram.webhook is not None
        assert telegram.webhook["url"] == "https://rk.example.com/webhooks/support-bot/s3cret"
        assert "s3cret" not in result.output  # the output does not print the secret
        telegram.fail(
            error(400, "Bad Request: bad webhook: IP address 10.0.0.1 is reserved"),
            method="setWebhook",
        )
        result = run(cli, ["telegram", "set-webhook", "https://10.0.0.1", "--config", str(path)])
        assert result.exit_code == 1
        assert "setWebhook failed" in result.output and "is reserved" in result.output
        result = run(cli, ["telegram", "set-webhook", "rk.example.com", "--config", str(path)])
        assert result.exit_code == 1 and "is not an http(s) URL" in result.output
        result = run(
            cli,
            [
                "telegram",
                "set-webhook",
                "https://a.example",
                "--config",
                str(path),
                "--channel",
                "x",
            ],
        )
        assert result.exit_code == 1 and "no telegram-bot channel 'x'" in result.output


def test_the_core_never_imports_the_plugin() -> None:
    core = Path(rulekit.__file__).parent
    for source in core.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.startswith("rulekit_telegram") for name in names), source


def test_a_url_holding_the_secret_is_warned_about_and_never_echoed(tmp_path: Path) -> None:
    """The secret belongs in the config, not on a command line (which every user of the
    machine can read, and the shell keeps): the help asks for the host only, a URL that holds
    the secret still works but is warned about, and no output repeats it."""
    with FakeTelegram(token="5:tok") as telegram:
        path = tmp_path / "rulekit.yaml"
        path.write_text(
            "channels:\n"
            "  support-bot:\n"
            "    provider: telegram-bot\n"
            "    token: '5:tok'\n"
            f"    base_url: {telegram.service.base_url}\n"
            "    webhook_secret: s3cretWH42\n"
        )
        run = CliRunner().invoke
        assert "<webhook_secret>" not in run(cli, ["telegram", "set-webhook", "--help"]).output
        full = "https://rk.example.com/webhooks/support-bot/s3cretWH42"
        result = run(cli, ["telegram", "set-webhook", full, "--config", str(path)])
        assert result.exit_code == 0, result.output
        assert telegram.webhook is not None and telegram.webhook["url"] == full
        assert "warning: the URL holds the channel's webhook_secret" in result.output
        assert "s3cretWH42" not in result.output
        no_scheme = "rk.example.com/webhooks/support-bot/s3cretWH42"
        result = run(cli, ["telegram", "set-webhook", no_scheme, "--config", str(path)])
        assert result.exit_code == 1 and "is not an http(s) URL" in result.output
        assert "s3cretWH42" not in result.output
