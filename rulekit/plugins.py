"""Loading plugins: the built-ins, then the ``rulekit`` entry-point group, then validation.

Nothing here runs at import time: :func:`load_plugins` builds a fresh plugin manager each call,
so tests (and the daemon's hot reload) get their own.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from rulekit import hookspecs
from rulekit.errors import PluginError
from rulekit.registry import ActionRegistry, ProviderRegistry, TemplateRegistry

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rulekit.channels.webhook",
    "rulekit.actions.autoreply",
    "rulekit.actions.assign",
    "rulekit.actions.tag",
    "rulekit.actions.set_state",
    "rulekit.actions.play_sound",
    "rulekit.actions.slack",
    "rulekit.actions.telegram",
    "rulekit.actions.webhook",
    "rulekit.actions.email",
    "rulekit.actions.update_client",
    "rulekit.expr.filters",
)
"""Built-in plugins, registered under their module names (disable them by those names)."""

ENTRY_POINT_GROUP = "rulekit"
DISABLE_ENV = "RULEKIT_DISABLE_PLUGINS"


@dataclass
class PluginInfo:
    """A loaded plugin: its name, and the distribution it came from (None for built-ins)."""

    name: str
    distribution: str | None = None
    version: str | None = None


@dataclass
class Plugins:
    """Everything the loaded plugins registered."""

    manager: pluggy.PluginManager
    providers: ProviderRegistry = field(default_factory=ProviderRegistry)
    actions: ActionRegistry = field(default_factory=ActionRegistry)
    templates: TemplateRegistry = field(default_factory=TemplateRegistry)
    info: dict[str, PluginInfo] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()

    def source(self, plugin: str) -> str:
        """How to show where a plugin came from: its distribution, or "built-in"."""
        info = self.info.get(plugin)
        if info is None or info.distribution is None:
            return "built-in"
        return f"{info.distribution} {info.version or ''}".strip()


def disabled_from_env() -> set[str]:
    """Plugin names listed in ``RULEKIT_DISABLE_PLUGINS`` (comma separated)."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(
    disabled: Iterable[str] = (),
    *,
    extra: Iterable[tuple[str, object]] = (),
    entry_points: bool = True,
    builtins: bool = True,
) -> Plugins:
    """Build a plugin manager and collect what every enabled plugin registers.

    ``disabled`` names plugins (built-in module names, entry-point names or distribution names)
    to leave out; ``RULEKIT_DISABLE_PLUGINS`` adds to it. ``extra`` registers more plugin objects
    (tests use it for fake plugins). ``builtins=False`` leaves the built-in plugins out (the CLI's
    command loading: they add no commands). Each registration hook is called through pluggy, one
    plugin at a time in loading order, with a registry bound to that plugin.
    """
    plugins = _register_plugins(disabled, extra=extra, entry_points=entry_points, builtins=builtins)
    _collect(plugins, "rulekit_register_providers", lambda name: plugins.providers.bound_to(name))
    _collect(plugins, "rulekit_register_actions", lambda name: plugins.actions.bound_to(name))
    _collect(plugins, "rulekit_template_environment", lambda name: plugins.templates.bound_to(name))
    return plugins


def _register_plugins(
    disabled: Iterable[str],
    *,
    extra: Iterable[tuple[str, object]],
    entry_points: bool,
    builtins: bool,
) -> Plugins:
    """Build the plugin manager and register every enabled plugin, calling no hook yet."""
    blocked = frozenset(disabled) | disabled_from_env()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager=manager, disabled=blocked)

    for module_name in DEFAULT_PLUGINS if builtins else ():
        if module_name in blocked:
            continue
        _register(plugins, importlib.import_module(module_name), PluginInfo(module_name))
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else None
            if ep.name in blocked or (dist is not None and dist in blocked):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise PluginError(f"plugin {ep.name!r} ({dist}) failed to load: {exc}") from exc
            version = ep.dist.version if ep.dist is not None else None
            _register(plugins, plugin, PluginInfo(ep.name, dist, version))
    for name, plugin in extra:
        if name not in blocked:
            _register(plugins, plugin, PluginInfo(name))

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    return plugins


def _register(plugins: Plugins, plugin: object, info: PluginInfo) -> None:
    if plugins.manager.has_plugin(info.name):
        raise PluginError(f"two plugins are named {info.name!r}")
    try:
        plugins.manager.register(plugin, name=info.name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {info.name!r}: {exc}") from exc
    plugins.info[info.name] = info


def _collect(plugins: Plugins, hook_name: str, register: Callable[[str], object]) -> None:
    """Call one registration hook through pluggy, plugin by plugin in loading order.

    pluggy passes each implementation only the arguments it declares; ``register(name)`` gives
    the registry bound to plugin ``name``, so a duplicate is attributed to the plugin that made it.
    """
    call_hook(plugins, hook_name, lambda name: {"register": register(name)}, registers=True)


def call_hook(
    plugins: Plugins,
    hook_name: str,
    arguments: Callable[[str], dict[str, object]],
    *,
    registers: bool = False,
) -> None:
    """Call ``hook_name`` of every plugin implementing it, one at a time in loading order.

    An exception other than :class:`PluginError` raised by a plugin becomes a ``PluginError``
    naming the plugin and the hook; so does a value returned by a registration hook
    (``registers``), which rulekit would not read.
    """
    manager = plugins.manager
    implementing = {impl.plugin_name for impl in getattr(manager.hook, hook_name).get_hookimpls()}
    everyone = [manager.get_plugin(name) for name in plugins.info]
    for name in plugins.info:
        if name not in implementing:
            continue
        own = manager.get_plugin(name)
        caller = manager.subset_hook_caller(hook_name, [p for p in everyone if p is not own])
        try:
            returned = caller(**arguments(name))
        except PluginError:
            raise
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(f"plugin {name!r} failed in {hook_name}: {exc}") from exc
        if registers and any(value is not None for value in returned or ()):
            # (what it returned is not read: a plugin returning its classes registers nothing)
            raise PluginError(
                f"plugin {name!r} returned a value from {hook_name}; hooks return nothing: "
                "call the registry it is given (register.add(...), register.filter(...))"
            )


def load_command_plugins(cli: Any) -> None:
    """Call ``rulekit_register_commands`` of the installed (entry-point) plugins only.

    The plugins are registered as :func:`load_plugins` does (so a misspelled hook fails here
    too), without the built-ins, which add no commands, and without calling the other
    registration hooks: those import the providers and their HTTP clients, which ``rulekit
    --help`` and the commands that need no plugin must not pay for.
    """
    plugins = _register_plugins((), extra=(), entry_points=True, builtins=False)
    call_hook(plugins, "rulekit_register_commands", lambda _name: {"cli": cli})
