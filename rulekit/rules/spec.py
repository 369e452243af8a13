"""Rules: the format admins write (validated models) and the compiled form the engine runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Discriminator, Field, StrictBool, Tag, field_validator
from pydantic import ValidationInfo as _Info

from rulekit.actions.base import Action
from rulekit.errors import Location
from rulekit.expr.budget import OverBudget, current
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


class BusinessDelay(StrictModel):
    """``after: {business: 10m, calendar: support}`` — a delay counted in open hours only."""

    business: Duration
    calendar: str = Field(min_length=1)


After = Annotated[
    Annotated[Duration, Tag("after:duration")] | Annotated[BusinessDelay, Tag("after:business")],
    Discriminator(lambda value: "after:business" if isinstance(value, dict) else "after:duration"),
]
"""``after:``: a duration, or business time (one error message for either, not both)."""


class RuleSpec(StrictModel):
    """One rule as written. ``if`` and ``do`` are checked in detail by the loader."""

    name: str = Field(min_length=1)
    description: str | None = None
    enabled: StrictBool = True
    on: Trigger
    if_: Any = Field(None, alias="if")
    do: list[Any] = Field(min_length=1)
    stop: StrictBool = False
    cooldown: Duration | None = None
    allow_own_events: StrictBool = False
    after: After | None = Field(
        None, description="delay the actions: a duration, or {business: 10m, calendar: NAME}"
    )
    unless: Any = Field(None, description="a condition evaluated when the timer fires")
    cancel_on: list[str] | None = Field(
        None, description="events of the conversation that cancel the pending timer"
    )
    restart: StrictBool | None = Field(
        None, description="a new trigger restarts a pending timer (default: keep the first)"
    )
    max_late: Duration | None = Field(
        None, description="a timer overdue by more than this is dropped (default 1h)"
    )

    _cancel_names = field_validator("cancel_on", mode="before")(_names)

    @field_validator("name")
    @classmethod
    def _not_a_channel_timer(cls, value: str) -> str:
        # the store keeps channels' timers under "@<channel>:<name>" beside the rules' timers
        if value.startswith("@"):
            raise ValueError("a rule's name cannot start with '@' (channel timers use those)")
        return value

    model_config = {"extra": "forbid", "populate_by_name": False}


# -- compiled form -----------------------------------------------------------------------------


@dataclass
class Either:
    """A must-hold condition that is a disjunction (``any:``, ``or``): the conjuncts of each
    branch. The index files a rule under it when every branch has an indexable condition."""

    branches: list[list[Any]]


@dataclass(slots=True)
class Leaf:
    """One expression condition. Its own function is compiled on first use: the fast path
    evaluates a rule's whole condition as one function (the engine's matcher of the rule);
    single conditions are evaluated one by one only to explain."""

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


@dataclass(slots=True)
class ActionStep:
    """One entry of a rule's ``do:`` list, compiled."""

    action: str
    action_class: type[Action]
    params: dict[str, Any]
    """The parameters as written, with templates replaced by :class:`Value` objects."""
    location: Location
    constant: bool = False
    """Whether the parameters have no templates: they were validated at load."""
    _validated: Any = field(default=None, repr=False)
    _dumped: dict[str, Any] | None = field(default=None, repr=False)
    _entry: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def validated(self) -> Any:
        """For parameters without templates: the validated model, made once (on first use:
        the load validated them, and most rules of a large set rarely fire, so the models of
        those that never do are not kept). None for parameters rendered per event."""
        if self._validated is None and self.constant:
            self._validated = self.action_class.Params.model_validate(self.params)
        return self._validated

    def render(self, e: Any, now: Any, env: Any) -> dict[str, Any]:
        """The parameters for this event: templates rendered, values escaped for the markup
        they landed in (for actions that send markup, see :mod:`rulekit.expr.markup`). What
        they hold is charged to the rule's budget: each template's output is limited, and
        together a rule's parameters are too (many templates repeating a long client value
        would otherwise make a plan of any size, stored and sent by the daemon)."""
        if not self.action_class.markup:
            rendered = self._render_params(e, now, env)
        else:
            with interpolations(
                MAX_OUTPUT, bidi_controls=not self.action_class.read_by_people
            ) as values:
                rendered = self.action_class.escape(values, self._render_params(e, now, env))
        charge_parameters(rendered)
        return rendered

    def _render_params(self, e: Any, now: Any, env: Any) -> dict[str, Any]:
        return {key: _render(value, e, now, env) for key, value in self.params.items()}

    def planned(self, e: Any, now: Any, env: Any) -> Any:
        """The validated parameter model for this event."""
        model = self.validated
        if model is None:
            model = self.action_class.Params.model_validate(self.render(e, now, env))
        return model

    def dumped(self) -> dict[str, Any] | None:
        """For parameters without templates: the validated model as JSON data, made once
        (shared: read only). None for parameters rendered per event."""
        if self.validated is None:
            return None
        if self._dumped is None:
            self._dumped = self.validated.model_dump(mode="json")
        return self._dumped

    def entry(self, rule: str) -> dict[str, Any] | None:
        """For parameters without templates: the action as a plan's trace records it
        (``{"rule", "action", "params"}``), made once (shared: read only)."""
        if self._entry is None or self._entry["rule"] != rule:
            dumped = self.dumped()
            if dumped is None:
                return None
            self._entry = {"rule": rule, "action": self.action, "params": dumped}
        return self._entry


def charge_parameters(rendered: Any) -> None:
    """Charge the text of rendered parameters to the active budget (the rule's, within the
    event's): over what a rule may build, or what the event's actions may hold together
    (:data:`~rulekit.expr.budget.MAX_PLAN`), :class:`~rulekit.expr.budget.OverBudget`."""
    budget = current()
    total = 0
    pending = [rendered]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            total += len(item)
            pending.extend(item)
        else:
            total += 1
    if total > budget.built:
        raise OverBudget(
            f"the rule's parameters would hold more than {budget.limits.built} characters"
        )
    if total > budget.planned:
        raise OverBudget(
            f"the event's actions would hold more than {budget.limits.plan} characters together"
        )
    budget.build(total)
    budget.planned -= total


def _render(params: Any, e: Any, now: Any, env: Any) -> Any:
    if isinstance(params, Value):
        return params.value(e, now, env)
    if isinstance(params, dict):
        return {key: _render(value, e, now, env) for key, value in params.items()}
    if isinstance(params, list):
        return [_render(value, e, now, env) for value in params]
    return params


DEFAULT_MAX_LATE = timedelta(hours=1)


@dataclass(slots=True)
class Timing:
    """A timed rule's ``after:`` and the keys beside it, compiled."""

    after: timedelta
    calendar: str | None = None
    """For business time: the calendar whose open hours count."""
    unless: Condition | None = None
    cancel_on: tuple[str, ...] = ()
    restart: bool = False
    max_late: timedelta = DEFAULT_MAX_LATE

    def describe(self) -> str:
        """``5m`` or ``10m of business time (support)``, for people."""
        text = format_duration(self.after)
        return f"{text} of business time ({self.calendar})" if self.calendar else text


def format_duration(value: timedelta) -> str:
    """A duration the way rules write it (``90s`` → ``90s``, ``300s`` → ``5m``); an hour or more
    that is not a whole number of a unit, in its two largest units, to the second (``626d 8h``,
    not ``5.41183e+07s``)."""
    seconds = value.total_seconds()
    units = (("d", 86400), ("h", 3600), ("m", 60))
    for unit, size in units:
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 3600:
        return f"{seconds:g}s"
    left = round(seconds)
    parts = []
    for unit, size in (*units, ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


@dataclass(eq=False, slots=True)
class Rule:
    """A compiled rule."""

    name: str
    position: int
    location: Location
    channels: tuple[str, ...] | None
    events: tuple[str, ...] | None
    condition: Condition | None
    """None: the rule holds for every event of its channels and events."""
    steps: list[ActionStep]
    description: str | None = None
    stop: bool = False
    cooldown: timedelta | None = None
    allow_own_events: bool = False
    conjuncts: Sequence[Any] = ()
    """The must-hold conditions the rule index reads (dropped once it has)."""
    timing: Timing | None = None
    """For rules with ``after:``: when and whether the actions run later."""


def outline(rule: Rule) -> None:
    """Keep of ``rule`` only what knowing it needs (name, location, channels, events, timing,
    each step's action): its conditions, generated functions and step parameters go."""
    rule.condition = None
    rule.conjuncts = ()
    for step in rule.steps:
        if step.params:
            step.params = {}
        step._validated = step._dumped = step._entry = None
    if rule.timing is not None:
        rule.timing.unless = None
