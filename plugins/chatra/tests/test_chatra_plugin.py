"""The plugin as rulekit sees it: entry point, registration, config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import rulekit
from rulekit.config import load_config
from rulekit.errors import ValidationErrors
from rulekit.plugins import load_plugins

from rulekit_chatra import ChatraProvider, ChatraSettings


def test_the_entry_point_registers_the_chatra_provider():
    plugins = load_plugins()
    assert plugins.providers["chatra"] is ChatraProvider
    assert plugins.providers.entries["chatra"].plugin == "chatra"
    assert plugins.source("chatra").startswith("rulekit-chatra ")


def test_the_plugin_can_be_disabled_by_name():
    assert "chatra" not in load_plugins(disabled=["chatra"]).providers


def test_without_a_config_chatra_offers_the_online_chat_channel():
    config = load_config(None, load_plugins())
    channel = config.channels["online-chat"]
    assert channel.provider == "chatra"
    assert isinstance(channel.settings, ChatraSettings)


def test_a_config_file_configures_the_channel_with_secrets_from_the_environment(tmp_path):
    path = tmp_path / "rulekit.yaml"
    path.write_text(
        "groups: [support]\n"
        "channels:\n"
        "  online-chat:\n"
        "    provider: chatra\n"
        "    webhook_secret: ${HOOK}\n"
        "    public_key: pub\n"
        "    secret_key: ${CHATRA_SECRET}\n"
        "    default_group: support\n"
        "    client_data: [name, email]\n"
    )
    env = {"HOOK": "h00k", "CHATRA_SECRET": "topsecret"}
    settings = load_config(path, load_plugins(), environ=env).channels["online-chat"].settings
    assert isinstance(settings, ChatraSettings)
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "topsecret"
    assert settings.client_data == ["name", "email"]
    assert "topsecret" not in repr(settings)


def test_a_misspelled_setting_is_an_error_with_file_and_line(tmp_path):
    path = tmp_path / "rulekit.yaml"
    path.write_text("channels:\n  online-chat:\n    provider: chatra\n    secret_kee: x\n")
    with pytest.raises(ValidationErrors) as caught:
        load_config(path, load_plugins(), environ={})
    assert f"{path}:4" in str(caught.value)
    assert "secret_kee" in str(caught.value)


def test_the_core_never_imports_the_plugin():
    core = Path(rulekit.__file__).parent
    for source in core.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.startswith("rulekit_chatra") for name in names), source
