"""Loading plugins: the built-ins, then the ``rulekit`` entry-point group, then validation.

Nothing here runs at import time: :func:`load_plugins` builds a fresh plugin manager each call,
so tests (and the daemon's hot reload) get their own.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from rulekit import hookspecs
from rulekit.errors import PluginError
from rulekit.registry import ActionRegistry, ProviderRegistry, TemplateRegistry

DEFAULT_PLUGINS: tuple[str, ...] = (
    "rulekit.channels.webhook",
    "rulekit.actions.autoreply",
    "rulekit.actions.assign",
    "rulekit.actions.play_sound",
    "rulekit.actions.slack",
    "rulekit.actions.telegram",
    "rulekit.filters",
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


def disabled_from_env(environ: dict[str, str] | None = None) -> set[str]:
    """Plugin names listed in ``RULEKIT_DISABLE_PLUGINS`` (comma separated)."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def load_plugins(
    disabled: Iterable[str] = (),
    *,
    extra: Iterable[tuple[str, object]] = (),
    entry_points: bool = True,
) -> Plugins:
    """Build a plugin manager and collect what every enabled plugin registers.

    ``disabled`` names plugins (built-in module names, entry-point names or distribution names)
    to leave out; ``RULEKIT_DISABLE_PLUGINS`` adds to it. ``extra`` registers more plugin objects
    (tests use it for fake plugins).
    """
    blocked = frozenset(disabled) | disabled_from_env()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager=manager, disabled=blocked)

    for module_name in DEFAULT_PLUGINS:
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

    _collect(manager, "rulekit_register_providers", plugins.providers)
    _collect(manager, "rulekit_register_actions", plugins.actions)
    _collect(manager, "rulekit_template_environment", plugins.templates)
    return plugins


def _register(plugins: Plugins, plugin: object, info: PluginInfo) -> None:
    if plugins.manager.has_plugin(info.name):
        raise PluginError(f"two plugins are named {info.name!r}")
    try:
        plugins.manager.register(plugin, name=info.name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {info.name!r}: {exc}") from exc
    plugins.info[info.name] = info


def _collect(manager: pluggy.PluginManager, hook_name: str, registry: Any) -> None:
    """Call one registration hook plugin by plugin, so the registry knows who added what."""
    hook = getattr(manager.hook, hook_name)
    # pluggy returns implementations last-registered-first; call them in registration order.
    for impl in reversed(hook.get_hookimpls()):
        impl.function(registry.bound_to(impl.plugin_name))


def plugin_modules() -> list[ModuleType]:
    """The built-in plugin modules (for documentation and meta-tests)."""
    return [importlib.import_module(name) for name in DEFAULT_PLUGINS]


def load_command_plugins(cli: Any) -> None:
    """Call ``rulekit_register_commands`` of the installed (entry-point) plugins only.

    Built-in plugins add no commands, so ``rulekit --help`` does not import them.
    """
    blocked = disabled_from_env()
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else None
        if ep.name in blocked or (dist is not None and dist in blocked):
            continue
        manager.register(ep.load(), name=ep.name)
    manager.hook.rulekit_register_commands(cli=cli)
