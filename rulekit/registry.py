"""Registries the registration hooks fill: providers, actions, template extensions.

Each registry remembers which plugin added each name, so that a duplicate is an error that names
both plugins instead of a silent override.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pydantic import BaseModel

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


def model_schema(entry: Registered[Any], kind: str, model: type[BaseModel], **options: Any) -> Any:
    """The JSON Schema of a model a plugin registered (an action's ``Params``, a provider's
    ``Settings``); a model pydantic cannot describe (a field of a type JSON has no form for) is
    an error naming the plugin, not a traceback of ``rulekit schema`` or ``rulekit plugins``."""
    try:
        return model.model_json_schema(**options)
    except Exception as exc:  # pydantic's errors for this differ by version
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PluginError(
            f"plugin {entry.plugin!r}: {kind} {entry.name!r}: {model.__name__} has no JSON "
            f"Schema: {reason}"
        ) from None


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

    def _refuse(self, name: Any, problem: str) -> PluginError:
        return PluginError(f"plugin {self.plugin!r} registered {self.kind} {name!r}: {problem}")


def _derives(value: Any, contract: str) -> bool:
    """Whether ``value`` is a class deriving from the class named ``contract`` (its module and
    name: the plugin system stands beside the contracts and does not import them)."""
    return isinstance(value, type) and any(
        f"{base.__module__}.{base.__qualname__}" == contract for base in value.__mro__
    )


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


class ProviderRegistry(_Registry["type[Provider]"]):
    """Passed to ``rulekit_register_providers``."""

    def __init__(self) -> None:
        super().__init__("provider")

    def add(self, provider: type[Provider]) -> None:
        """Register a provider class under its ``name``: a :class:`rulekit.channels.Provider`
        whose ``Settings`` is a pydantic model (anything else is an error naming the plugin,
        not a crash of whichever command first reads it)."""
        name = getattr(provider, "name", "")
        if not _derives(provider, "rulekit.channels.base.Provider"):
            raise self._refuse(name, "not a subclass of rulekit.channels.Provider")
        if not _is_model(getattr(provider, "Settings", None)):
            raise self._refuse(name, "its Settings is not a pydantic model")
        default = getattr(provider, "default_channel", None)
        if default is not None and not isinstance(default, str):
            raise self._refuse(name, "its default_channel is not a string")
        self._add(name, provider)


class ActionRegistry(_Registry["type[Action]"]):
    """Passed to ``rulekit_register_actions``."""

    def __init__(self) -> None:
        super().__init__("action")

    def add(self, action: type[Action]) -> None:
        """Register an action class under its ``name``: a :class:`rulekit.actions.Action`
        whose ``Params`` (and ``Integration``, when it has one) is a pydantic model."""
        name = getattr(action, "name", "")
        if not _derives(action, "rulekit.actions.base.Action"):
            raise self._refuse(name, "not a subclass of rulekit.actions.Action")
        if not _is_model(getattr(action, "Params", None)):
            raise self._refuse(name, "its Params is not a pydantic model")
        integration = getattr(action, "Integration", None)
        if integration is not None and not _is_model(integration):
            raise self._refuse(name, "its Integration is not a pydantic model")
        self._add(name, action)


def _dotted_name(name: str) -> bool:
    """A name a template can write after ``|`` or ``is`` (dotted, as Jinja allows)."""
    return all(part.isidentifier() for part in name.split("."))


def _plain_name(name: str) -> bool:
    return name.isidentifier()


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
        self._check(self.filters, name, _dotted_name, function)
        self.filters._add(name, function)

    def test(self, name: str, function: Callable[..., Any]) -> None:
        """Add a test, usable as ``value is name``."""
        self._check(self.tests, name, _dotted_name, function)
        self.tests._add(name, function)

    def global_(self, name: str, value: Any) -> None:
        """Add a global name (a constant or a pure function)."""
        self._check(self.globals, name, _plain_name, None)
        self.globals._add(name, value)

    @staticmethod
    def _check(
        registry: _Registry[Any], name: Any, syntax: Callable[[str], bool], function: Any
    ) -> None:
        """A name no template could write, or a filter or test that cannot be called, is an
        error naming the plugin (the rules would only fail later, far from the cause)."""
        if isinstance(name, str) and name and not syntax(name):
            raise registry._refuse(name, "not a name templates can write")
        if function is not None and not callable(function):
            raise registry._refuse(name, "not a function")
