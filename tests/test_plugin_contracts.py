"""A plugin that registers something rulekit cannot use, or a template name rulekit already
has, is an error naming the plugin when plugins load (or when the rules' sandbox is made),
never a traceback of whichever command reads it first nor a silent change of the language."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from scaffold import write

from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.channels.base import ChannelSettings, Provider
from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.errors import PluginError
from rulekit.models import StrictModel
from rulekit.plugins import load_plugins


class Params(StrictModel):
    text: str


class NoParams:
    name = "noparams"


class DictParams(Action):
    name = "dictparams"
    Params = dict  # type: ignore[assignment]


class PlainIntegration(Action):
    name = "plainintegration"
    Params = Params
    integration = "thing"
    Integration = str  # type: ignore[assignment]


class NotAProvider:
    name = "notaprovider"
    default_channel = "x-chat"


class DictSettings(Provider):
    name = "dictsettings"
    default_channel = "x-chat"
    Settings = dict  # type: ignore[assignment]


class NumberedChannel(Provider):
    name = "numbered"
    default_channel = 5  # type: ignore[assignment]


def _registering(hook: str, call: Any) -> object:
    class Plugin:
        pass

    def implementation(self: object, register: Any) -> None:
        call(register)

    setattr(Plugin, hook, hookimpl(implementation))
    return Plugin()


ACTIONS = "rulekit_register_actions"
PROVIDERS = "rulekit_register_providers"
TEMPLATES = "rulekit_template_environment"


@pytest.mark.parametrize(
    ("hook", "call", "message"),
    [
        (ACTIONS, lambda r: r.add(NoParams), "action 'noparams': not a subclass of"),
        (ACTIONS, lambda r: r.add(NoParams()), "action 'noparams': not a subclass of"),
        (ACTIONS, lambda r: r.add(DictParams), "'dictparams': its Params is not a pydantic"),
        (ACTIONS, lambda r: r.add(PlainIntegration), "its Integration is not a pydantic"),
        (PROVIDERS, lambda r: r.add(NotAProvider), "'notaprovider': not a subclass of"),
        (PROVIDERS, lambda r: r.add(DictSettings), "its Settings is not a pydantic model"),
        (PROVIDERS, lambda r: r.add(NumberedChannel), "its default_channel is not a string"),
        (TEMPLATES, lambda r: r.filter("shout", 42), "template filter 'shout': not a function"),
        (TEMPLATES, lambda r: r.test("vip", "x"), "template test 'vip': not a function"),
        (TEMPLATES, lambda r: r.filter("a b", str), "'a b': not a name templates can write"),
        (TEMPLATES, lambda r: r.test("is-vip", str), "not a name templates can write"),
        (TEMPLATES, lambda r: r.global_("a.b", 1), "not a name templates can write"),
    ],
)
def test_what_rulekit_cannot_use_is_refused_naming_the_plugin(
    hook: str, call: Any, message: str
) -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[("odd", _registering(hook, call))])
    assert str(caught.value).startswith("plugin 'odd' registered ")
    assert message in str(caught.value)


def test_dotted_filter_names_are_fine(tmp_path: Path) -> None:
    plugin = _registering(TEMPLATES, lambda r: r.filter("shop.shout", lambda v: f"{v}!"))
    plugins = load_plugins(extra=[("shop", plugin)])
    rules = write(
        tmp_path / "r" / "a.yaml",
        "- name: a\n  on: {event: message}\n"
        "  do: [{slack: {channel: '#a', text: '{{ message.text|shop.shout }}'}}]\n",
    ).parent
    Engine.from_path(rules, plugins=plugins)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("filter", "join"),  # Jinja's, budgeted by rulekit
        ("filter", "truncate"),  # rulekit's own, markup-aware
        ("filter", "default"),  # rulekit's meaning: None is missing
        ("filter", "datetime"),  # made from the config
        ("filter", "regex_search"),  # a built-in plugin's: a duplicate
        ("test", "defined"),  # rulekit's meaning: not None
        ("test", "divisibleby"),
        ("global", "range"),  # bounded by the budget
        ("global", "dict"),
        ("global", "business_hours"),  # made from the config
        ("global", "message"),  # a name of the event
        ("global", "none"),
    ],
)
def test_a_template_name_rulekit_has_is_refused_naming_the_plugin(
    tmp_path: Path, kind: str, name: str
) -> None:
    function = lambda *args, **kwargs: "replaced"  # noqa: E731
    register = {"filter": "filter", "test": "test", "global": "global_"}[kind]
    plugin = _registering(TEMPLATES, lambda r: getattr(r, register)(name, function))
    rules = write(
        tmp_path / "r" / "a.yaml",
        "- name: a\n  on: {event: message}\n  do: [{tag: {add: [x]}}]\n",
    ).parent
    with pytest.raises(PluginError) as caught:
        Engine.from_path(rules, plugins=load_plugins(extra=[("odd", plugin)]))
    assert f"plugin 'odd' registers template {kind} {name!r}, which is built in" in str(
        caught.value
    ) or "registered by plugin 'rulekit.expr.filters' and again by plugin 'odd'" in str(
        caught.value
    )


PLUGIN_MODULE = """
from rulekit import hookimpl


class Wave:
    name = "wave"


@hookimpl
def rulekit_register_actions(register):
    register.add(Wave)
"""

NO_SCHEMA_MODULE = """
from typing import Callable

from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.models import StrictModel


class WaveParams(StrictModel):
    model_config = {"arbitrary_types_allowed": True}
    then: Callable[[], None] | None = None


class Wave(Action):
    name = "wave"
    Params = WaveParams


@hookimpl
def rulekit_register_actions(register):
    register.add(Wave)
"""


@pytest.mark.parametrize(
    "command", [["plugins"], ["plugins", "--format", "json"], ["schema"], ["check", "rules"]]
)
@pytest.mark.parametrize(
    ("source", "message"),
    [
        (PLUGIN_MODULE, "error: plugin 'odd' registered action 'wave': not a subclass of"),
        (NO_SCHEMA_MODULE, "error: plugin 'odd': action 'wave': WaveParams has no JSON Schema"),
    ],
)
def test_commands_name_the_plugin_instead_of_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    source: str,
    message: str,
) -> None:
    if source is NO_SCHEMA_MODULE and command[0] == "check":
        pytest.skip("check reads no schema: such an action's rules load and run")
    _install(tmp_path, monkeypatch, source)
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Install ``source`` as the plugin ``odd`` of a distribution on ``sys.path``, with an
    empty rules folder ``rules`` in the working directory."""
    site = tmp_path / "site"
    module = "rulekit_odd_plugin_for_tests"
    write(site / f"{module}.py", source)
    dist = site / "rulekit_odd-0.1.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: rulekit-odd\nVersion: 0.1\n")
    write(dist / "entry_points.txt", f"[rulekit]\nodd = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    monkeypatch.setattr(cli, "_plugins_loaded", False, raising=False)
    write(tmp_path / "rules" / "a.yaml", "[]\n")
    monkeypatch.chdir(tmp_path)


class Returning:
    """Returns its action instead of registering it: rulekit would read nothing."""

    @hookimpl
    def rulekit_register_actions(self) -> list[type[Action]]:
        return [DictParams]


def test_a_hook_that_returns_a_value_is_refused_naming_the_plugin() -> None:
    with pytest.raises(PluginError) as caught:
        load_plugins(extra=[("returning", Returning())])
    assert str(caught.value).startswith(
        "plugin 'returning' returned a value from rulekit_register_actions; hooks return nothing"
    )


class TokenSettings(ChannelSettings):
    token: str


class NeedsToken(Provider):
    name = "needstoken"
    default_channel = "token-chat"
    Settings = TokenSettings


class SecondOnlineChat(Provider):
    name = "secondchat"
    default_channel = "online-chat"


def _providing(*providers: type[Provider]) -> object:
    return _registering(PROVIDERS, lambda r: [r.add(p) for p in providers] and None)


def test_without_a_config_a_provider_whose_settings_need_values_offers_no_channel(
    tmp_path: Path,
) -> None:
    """The default config cannot give a token: such a provider's channel is the config's to
    add (a rule on it can never fire, and check says so), never a crash of every command."""
    plugins = load_plugins(extra=[("tokens", _providing(NeedsToken))])
    rules = write(
        tmp_path / "r" / "a.yaml",
        "- name: a\n  on: {channel: token-chat}\n  do: [{tag: {add: [x]}}]\n",
    ).parent
    engine = Engine.from_path(rules, plugins=plugins)
    assert "token-chat" not in engine.config.channels
    assert "online-chat" in engine.config.channels
    assert any("channel 'token-chat' is not configured" in str(w) for w in engine.ruleset.warnings)


def test_without_a_config_two_providers_of_one_channel_are_an_error_naming_both(
    tmp_path: Path,
) -> None:
    plugins = load_plugins(extra=[("second", _providing(SecondOnlineChat))])
    rules = write(tmp_path / "r" / "a.yaml", "[]\n").parent
    with pytest.raises(PluginError) as caught:
        Engine.from_path(rules, plugins=plugins)
    assert str(caught.value) == (
        "providers 'chatra' (plugin 'chatra') and 'secondchat' (plugin 'second') both offer the "
        "channel 'online-chat': name its provider in a config, or disable one of the plugins"
    )
    config = write(tmp_path / "rulekit.yaml", "channels:\n  online-chat: {provider: secondchat}\n")
    engine = Engine.from_path(rules, config, plugins=plugins)
    assert engine.config.channels["online-chat"].provider == "secondchat"


def _oops(*args: Any, **kwargs: Any) -> Any:
    raise KeyError("oops")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("check", "failed checking its parameters: KeyError: 'oops'"),
        ("lint", "failed checking its parameters: KeyError: 'oops'"),
        ("lint_on", "failed checking its parameters: KeyError: 'oops'"),
        ("unavailable", "failed telling its availability: KeyError: 'oops'"),
    ],
)
def test_an_action_whose_checks_fail_is_an_error_at_the_step(
    tmp_path: Path, method: str, message: str
) -> None:
    """An action's checks run when the rules load (check, the start, a reload): a plugin's bug
    there is an error at the step naming the plugin, not an exception that ends the load."""
    from rulekit.errors import ValidationErrors

    bug = type("Bug", (Action,), {"name": "bug", "Params": Params})
    setattr(bug, method, classmethod(_oops) if method != "unavailable" else _oops)
    plugins = load_plugins(extra=[("buggy", _registering(ACTIONS, lambda r: r.add(bug)))])
    rules = write(
        tmp_path / "r" / "a.yaml",
        "- name: a\n  on: {event: message}\n  do:\n    - tag: {add: [x]}\n    - bug: {text: hi}\n",
    ).parent
    with pytest.raises(ValidationErrors) as caught:
        Engine.from_path(rules, plugins=plugins)
    assert f"a.yaml:5: [0].do[1].bug: action 'bug' (plugin 'buggy') {message}" in str(caught.value)


def test_an_action_that_cannot_be_made_is_an_error_naming_the_plugin(tmp_path: Path) -> None:
    bug = type("Bug", (Action,), {"name": "bug", "Params": Params, "__init__": _oops})
    plugins = load_plugins(extra=[("buggy", _registering(ACTIONS, lambda r: r.add(bug)))])
    rules = write(tmp_path / "r" / "a.yaml", "[]\n").parent
    with pytest.raises(PluginError) as caught:
        Engine.from_path(rules, plugins=plugins)
    assert str(caught.value) == "action 'bug' (plugin 'buggy') cannot be made: KeyError: 'oops'"


UNMAKEABLE_MODULE = """
from rulekit import hookimpl
from rulekit.channels.base import Provider


class Unmakeable(Provider):
    name = "unmakeable"
    default_channel = "odd-chat"

    def __init__(self, context):
        raise KeyError("oops")


@hookimpl
def rulekit_register_providers(register):
    register.add(Unmakeable)
"""


@pytest.mark.parametrize("command", [["check", "rules"], ["test", "--rules", "rules", "e.json"]])
def test_a_provider_that_cannot_be_made_is_an_error_naming_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    _install(tmp_path, monkeypatch, UNMAKEABLE_MODULE)
    write(tmp_path / "e.json", '{"channel": "odd-chat", "event": "created"}')
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (
        "error: channel 'odd-chat': provider 'unmakeable' (plugin 'odd') cannot be made: "
        "KeyError: 'oops'"
    ) in result.output
