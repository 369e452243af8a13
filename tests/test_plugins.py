"""The plugin system: built-ins and outside plugins through the same hooks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from scaffold import make_event, write

from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.channels.base import Provider
from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.errors import PluginError
from rulekit.event import Event
from rulekit.models import StrictModel
from rulekit.plugins import load_command_plugins, load_plugins


class EchoParams(StrictModel):
    text: str
    loud: bool = False


class Echo(Action):
    name = "echo"
    description = "say it back"
    Params = EchoParams


class FakeProvider(Provider):
    name = "fakeprovider"
    default_channel = "fake-chat"
    description = "a channel made of text bodies"

    def parse(self, body: bytes, state: Any) -> list[Event]:
        return [Event(channel=self.channel, event="created", message={"text": body.decode()})]


class FakePlugin:
    """A plain class with hook implementations, as an outside plugin would write it."""

    @hookimpl
    def rulekit_register_actions(self, register) -> None:
        register.add(Echo)

    @hookimpl
    def rulekit_register_providers(self, register) -> None:
        register.add(FakeProvider)

    @hookimpl
    def rulekit_template_environment(self, register) -> None:
        register.filter("shout", lambda value: f"{value}!".upper())
        register.test("vip", lambda value: value in {"ceo@shop.example"})
        register.global_("support_hours", "9-17")


class SlackImpostor:
    @hookimpl
    def rulekit_register_actions(self, register) -> None:
        class Impostor(Echo):
            name = "slack"

        register.add(Impostor)


class Misspelled:
    @hookimpl
    def rulekit_register_action(self, register) -> None:  # missing the final "s"
        raise AssertionError("never called")


RULES = """
- name: echo everything
  on: {channel: fake-chat, event: created}
  if:
    - message.text|shout == 'HI!'
    - client.email is vip
  do:
    - echo: {text: "{{ message.text|shout }} ({{ support_hours }})"}
"""


def test_fake_plugin_action_provider_filter_test_and_global_work_end_to_end(
    tmp_path: Path,
) -> None:
    plugins = load_plugins(extra=[("fake", FakePlugin())])
    assert "echo" in plugins.actions
    assert "fakeprovider" in plugins.providers
    rules = write(tmp_path / "rules" / "r.yaml", RULES).parent
    engine = Engine.from_path(rules, plugins=plugins)
    assert "fake-chat" in engine.config.channels  # the provider's default channel

    event = make_event(
        channel="fake-chat", message={"text": "hi"}, client={"email": "ceo@shop.example"}
    )
    plan = engine.evaluate(event)
    assert [(a.rule, a.action, a.params) for a in plan] == [
        ("echo everything", "echo", {"text": "HI! (9-17)", "loud": False})
    ]
    other = make_event(channel="fake-chat", message={"text": "hi"}, client={"email": "x@y.z"})
    assert list(engine.evaluate(other)) == []


def test_rules_using_an_unloaded_plugin_filter_fail_to_load(tmp_path: Path) -> None:
    from rulekit.errors import ValidationErrors

    rules = write(tmp_path / "rules" / "r.yaml", RULES).parent
    with pytest.raises(ValidationErrors) as caught:
        Engine.from_path(rules)
    text = str(caught.value)
    assert "unknown filter 'shout'" in text
    assert "unknown action 'echo'" in text


def test_duplicate_action_name_names_both_plugins() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[("impostor", SlackImpostor())])
    # the built-in loaded first and owns the name; the outside plugin registers it again
    assert str(caught.value) == (
        "action 'slack' is registered by plugin 'rulekit.actions.slack' and again by plugin "
        "'impostor'; disable one of them"
    )


class HoardedProvider(FakeProvider):
    name = "hoarded"


class Hoarder:
    """Keeps the registry it was given and adds to it from a later hook."""

    kept: Any = None

    @hookimpl
    def rulekit_register_providers(self, register) -> None:
        self.kept = register

    @hookimpl
    def rulekit_template_environment(self, register) -> None:
        self.kept.add(HoardedProvider)


def test_a_registry_kept_for_later_still_names_its_own_plugin() -> None:
    plugins = load_plugins(extra=[("fake", FakePlugin()), ("hoarder", Hoarder())])
    assert plugins.providers.entries["hoarded"].plugin == "hoarder"
    assert plugins.providers.entries["fakeprovider"].plugin == "fake"
    assert plugins.actions.entries["echo"].plugin == "fake"


class NoArguments:
    """pluggy lets an implementation take fewer arguments than the hook offers."""

    called: list[str]

    def __init__(self) -> None:
        self.called = []

    @hookimpl
    def rulekit_register_actions(self) -> None:
        self.called.append("actions")

    @hookimpl
    def rulekit_template_environment(self) -> None:
        self.called.append("templates")


def test_a_registration_hook_taking_no_arguments_is_called() -> None:
    plugin = NoArguments()
    plugins = load_plugins(extra=[("quiet", plugin)])
    assert plugin.called == ["actions", "templates"]
    assert "slack" in plugins.actions


class Exploding:
    @hookimpl
    def rulekit_register_actions(self, register) -> None:
        raise RuntimeError("boom")


def test_a_registration_hook_that_raises_is_named() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[("exploding", Exploding())])
    assert str(caught.value) == "plugin 'exploding' failed in rulekit_register_actions: boom"


def test_misspelled_hook_is_an_error() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[("typo", Misspelled())])
    assert "rulekit_register_action" in str(caught.value)


def test_disable_by_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RULEKIT_DISABLE_PLUGINS", "fake, rulekit.actions.slack")
    plugins = load_plugins(extra=[("fake", FakePlugin())])
    assert "echo" not in plugins.actions
    assert "slack" not in plugins.actions
    assert "telegram" in plugins.actions
    assert {"fake", "rulekit.actions.slack"} <= plugins.disabled


def test_disable_by_name_in_the_config(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "rules" / "r.yaml",
        """
        - name: greet
          on: {channel: online-chat}
          do: [{autoreply: {text: hi}}]
        """,
    ).parent
    config = write(tmp_path / "rulekit.yaml", "plugins: {disable: [rulekit.actions.slack]}\n")
    engine = Engine.from_path(rules, config)
    assert "slack" not in engine.plugins.actions
    assert "autoreply" in engine.plugins.actions

    runner = CliRunner()
    slack_rules = write(
        tmp_path / "slack" / "r.yaml",
        """
        - name: ping
          on: {channel: online-chat}
          do: [{slack: {channel: '#a', text: hi}}]
        """,
    ).parent
    result = runner.invoke(cli, ["check", str(slack_rules), "--config", str(config)])
    assert result.exit_code == 1
    assert "unknown action 'slack'" in result.output


def _actions_by_plugin(output: str) -> dict[str, list[str]]:
    data = json.loads(output)
    return {p["name"]: [a["name"] for a in p["actions"]] for p in data["plugins"]}


def test_plugins_json_lists_online_chat_from_the_chatra_distribution() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    providers = [
        (plugin["name"], plugin["source"], provider)
        for plugin in data["plugins"]
        for provider in plugin["providers"]
    ]
    chatra = [p for p in providers if p[2]["default_channel"] == "online-chat"]
    assert len(chatra) == 1
    name, source, provider = chatra[0]
    assert name == "chatra"  # the entry-point name in plugins/chatra/pyproject.toml
    assert source.startswith("rulekit-chatra")
    assert provider["name"] == "chatra"
    actions = {a for names in _actions_by_plugin(result.output).values() for a in names}
    assert {"autoreply", "assign", "play_sound", "slack", "telegram"} <= actions


def test_plugins_json_without_chatra_when_disabled() -> None:
    result = CliRunner().invoke(
        cli, ["plugins", "--format", "json"], env={"RULEKIT_DISABLE_PLUGINS": "chatra"}
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    channels = [p["default_channel"] for plugin in data["plugins"] for p in plugin["providers"]]
    assert "online-chat" not in channels
    assert "chatra" not in [plugin["name"] for plugin in data["plugins"]]
    assert "chatra" in data["disabled"]


def test_plugins_text_lists_actions_with_parameters() -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert "action telegram(chat_id, text, parse_mode?, message_thread_id?)" in result.output
    assert "channel online-chat" in result.output


# -- a plugin installed as a distribution: entry point, CLI command ---------------------------

PLUGIN_MODULE = '''
import click

from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.models import StrictModel


class WaveParams(StrictModel):
    to: str


class Wave(Action):
    name = "wave"
    description = "wave at someone"
    Params = WaveParams


@hookimpl
def rulekit_register_actions(register):
    register.add(Wave)


@hookimpl
def rulekit_register_commands(cli):
    @cli.command("wave")
    @click.argument("who")
    def wave(who):
        """Wave at WHO."""
        click.echo(f"waving at {who}")
'''


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A distribution ``rulekit-waving`` with entry point ``waving`` on ``sys.path``."""
    site = tmp_path / "site"
    module = "rulekit_waving_plugin_for_tests"
    write(site / f"{module}.py", PLUGIN_MODULE)
    dist = site / "rulekit_waving-0.3.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: rulekit-waving\nVersion: 0.3\n")
    write(dist / "entry_points.txt", f"[rulekit]\nwaving = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    # the group is module-level: give this test its own command table
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    monkeypatch.setattr(cli, "_plugins_loaded", False, raising=False)
    return module


def test_installed_plugin_adds_a_command_and_an_action(installed_plugin: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["wave", "Ana"])
    assert result.exit_code == 0, result.output
    assert result.output == "waving at Ana\n"
    assert "wave" in runner.invoke(cli, ["--help"]).output

    result = runner.invoke(cli, ["plugins", "--format", "json"])
    data = json.loads(result.output)
    waving = next(p for p in data["plugins"] if p["name"] == "waving")
    assert waving["source"] == "rulekit-waving 0.3"
    assert [a["name"] for a in waving["actions"]] == ["wave"]
    assert waving["actions"][0]["required"] == ["to"]


def test_installed_plugin_can_be_disabled_by_distribution_name(
    installed_plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RULEKIT_DISABLE_PLUGINS", "rulekit-waving")
    assert "wave" not in load_plugins().actions
    result = CliRunner().invoke(cli, ["wave", "Ana"])
    assert result.exit_code == 2
    assert "No such command 'wave'" in result.output


def test_a_misspelled_hook_in_a_command_plugin_is_an_error(
    installed_plugin: str, tmp_path: Path
) -> None:
    source = PLUGIN_MODULE.replace("def rulekit_register_commands", "def rulekit_register_command")
    write(tmp_path / "site" / f"{installed_plugin}.py", source)
    with pytest.raises(PluginError) as caught:
        load_command_plugins(click.Group())
    assert "rulekit_register_command" in str(caught.value)
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "warning: plugin commands not loaded" in result.output
    assert "rulekit_register_command" in result.output


def test_a_plugin_that_fails_to_import_is_named(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    write(site / "rulekit_broken_for_tests.py", "raise ImportError('no numpy here')\n")
    dist = site / "rulekit_broken-1.0.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: rulekit-broken\nVersion: 1.0\n")
    write(dist / "entry_points.txt", "[rulekit]\nbroken = rulekit_broken_for_tests\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as caught:
        load_plugins()
    assert "'broken'" in str(caught.value)
    assert "rulekit-broken" in str(caught.value)
    assert "no numpy here" in str(caught.value)


def test_plugin_managers_are_fresh_per_call() -> None:
    first = load_plugins(extra=[("fake", FakePlugin())])
    second = load_plugins()
    assert "echo" in first.actions
    assert "echo" not in second.actions
    assert first.manager is not second.manager
