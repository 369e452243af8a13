"""Registries the registration hooks fill: providers, actions, template extensions.

Each registry remembers which plugin added each name, so that a duplicate is an error that names
both plugins instead of a silent override.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from rulekit.errors import PluginError

if TYPE_CHECKING:
    from rulekit.actions.base import Action
    from rulekit.channels.base import Provider

T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    """Something a plugin registered, with the plugin's name."""

    name: str
    value: T
    plugin: str


@dataclass
class _Registry(Generic[T]):
    kind: str
    entries: dict[str, Registered[T]] = field(default_factory=dict)
    plugin: str = "?"

    def _add(self, name: str, value: T) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self.plugin!r} registered a {self.kind} without a name")
        if name in self.entries:
            first = self.entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered by plugin {first!r} and again by "
                f"plugin {self.plugin!r}; disable one of them"
            )
        self.entries[name] = Registered(name, value, self.plugin)

    def bound_to(self, plugin: str) -> Self:
        """A view of this registry (same entries) that attributes what it adds to ``plugin``."""
        view = copy.copy(self)
        view.plugin = plugin
        return view

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> T:
        return self.entries[name].value

    def names(self) -> list[str]:
        return sorted(self.entries)


class ProviderRegistry(_Registry["type[Provider]"]):
    """Passed to ``rulekit_register_providers``."""

    def __init__(self) -> None:
        super().__init__("provider")

    def add(self, provider: type[Provider]) -> None:
        """Register a provider class under its ``name``."""
        self._add(getattr(provider, "name", ""), provider)


class ActionRegistry(_Registry["type[Action]"]):
    """Passed to ``rulekit_register_actions``."""

    def __init__(self) -> None:
        super().__init__("action")

    def add(self, action: type[Action]) -> None:
        """Register an action class under its ``name``."""
        self._add(getattr(action, "name", ""), action)


class TemplateRegistry:
    """Passed to ``rulekit_template_environment``: filters, tests and globals."""

    def __init__(self) -> None:
        self.filters: _Registry[Callable[..., Any]] = _Registry("template filter")
        self.tests: _Registry[Callable[..., Any]] = _Registry("template test")
        self.globals: _Registry[Any] = _Registry("template global")

    def bound_to(self, plugin: str) -> TemplateRegistry:
        """A view of this registry (same entries) that attributes what it adds to ``plugin``."""
        view = copy.copy(self)
        view.filters = self.filters.bound_to(plugin)
        view.tests = self.tests.bound_to(plugin)
        view.globals = self.globals.bound_to(plugin)
        return view

    def filter(self, name: str, function: Callable[..., Any]) -> None:
        """Add a filter, usable as ``value | name``."""
        self.filters._add(name, function)

    def test(self, name: str, function: Callable[..., Any]) -> None:
        """Add a test, usable as ``value is name``."""
        self.tests._add(name, function)

    def global_(self, name: str, value: Any) -> None:
        """Add a global name (a constant or a pure function)."""
        self.globals._add(name, value)
