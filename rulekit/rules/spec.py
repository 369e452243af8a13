"""Rules: the format admins write (validated models) and the compiled form the engine runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator
from pydantic import ValidationInfo as _Info

from rulekit.actions.base import Action
from rulekit.errors import Location
from rulekit.expr.markup import interpolations
from rulekit.expr.sandbox import MAX_OUTPUT
from rulekit.models import Duration, StrictModel


def _names(value: Any, info: _Info) -> Any:
    if isinstance(value, str):
        return [value]
    return value


class Trigger(StrictModel):
    """``on:`` — which channels and events a rule listens to (each a name or a list)."""

    channel: list[str] | None = None
    event: list[str] | None = None

    _lists = field_validator("channel", "event", mode="before")(_names)


class RuleSpec(StrictModel):
    """One rule as written. ``if`` and ``do`` are checked in detail by the loader."""

    name: str = Field(min_length=1)
    description: str | None = None
    enabled: bool = True
    on: Trigger
    if_: Any = Field(None, alias="if")
    do: list[Any] = Field(min_length=1)
    stop: bool = False
    cooldown: Duration | None = None
    allow_own_events: bool = False

    model_config = {"extra": "forbid", "populate_by_name": False}


# -- compiled form -----------------------------------------------------------------------------


@dataclass
class Either:
    """A must-hold condition that is a disjunction (``any:``, ``or``): the conjuncts of each
    branch. The index files a rule under it when every branch has an indexable condition."""

    branches: list[list[Any]]


@dataclass
class Leaf:
    """One expression condition. Its own function is compiled on first use: the fast path
    evaluates a rule's whole condition as one function (``Rule.matcher``); single conditions
    are evaluated one by one only to explain."""

    source: str
    code: str
    location: Location
    compiler: Callable[[str], Callable[..., Any]] = field(repr=False)
    node: Any = field(default=None, repr=False)
    _function: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def function(self) -> Callable[..., Any]:
        if self._function is None:
            self._function = self.compiler(self.code)
        return self._function


@dataclass
class AllOf:
    children: list[Condition]


@dataclass
class AnyOf:
    children: list[Condition]


@dataclass
class NotOf:
    child: Condition


Condition = Leaf | AllOf | AnyOf | NotOf


@dataclass
class Value:
    """A parameter value: a constant, or a template rendered per event."""

    constant: Any = None
    render: Callable[..., str] | None = None

    def value(self, e: Any, now: Any, env: Any) -> Any:
        return self.constant if self.render is None else self.render(e, now, env)


@dataclass
class ActionStep:
    """One entry of a rule's ``do:`` list, compiled."""

    action: str
    action_class: type[Action]
    params: dict[str, Any]
    """The parameters as written, with templates replaced by :class:`Value` objects."""
    location: Location
    constant: bool = False
    validated: Any = None
    """For parameters without templates: the validated model, made once at load."""

    def render(self, e: Any, now: Any, env: Any) -> dict[str, Any]:
        """The parameters for this event: templates rendered, values escaped for the markup
        they landed in (for actions that send markup, see :mod:`rulekit.expr.markup`)."""
        if not self.action_class.markup:
            return self._render_params(e, now, env)
        with interpolations(MAX_OUTPUT) as values:
            rendered = self._render_params(e, now, env)
            return self.action_class.escape(values, rendered)

    def _render_params(self, e: Any, now: Any, env: Any) -> dict[str, Any]:
        return {key: _render(value, e, now, env) for key, value in self.params.items()}

    def planned(self, e: Any, now: Any, env: Any) -> tuple[Any, dict[str, Any]]:
        """The validated parameter model for this event, and its values as a new dict."""
        model = self.validated
        if model is None:
            model = self.action_class.Params.model_validate(self.render(e, now, env))
        return model, model.model_dump()


def _render(params: Any, e: Any, now: Any, env: Any) -> Any:
    if isinstance(params, Value):
        return params.value(e, now, env)
    if isinstance(params, dict):
        return {key: _render(value, e, now, env) for key, value in params.items()}
    if isinstance(params, list):
        return [_render(value, e, now, env) for value in params]
    return params


@dataclass(eq=False)
class Rule:
    """A compiled rule."""

    name: str
    position: int
    location: Location
    channels: tuple[str, ...] | None
    events: tuple[str, ...] | None
    condition: Condition | None
    matcher: Callable[..., Any] | None
    """All of ``condition`` as one function (short-circuit, raises on error); None = always."""
    steps: list[ActionStep]
    description: str | None = None
    stop: bool = False
    cooldown: timedelta | None = None
    allow_own_events: bool = False
    conjuncts: list[Any] = field(default_factory=list)
