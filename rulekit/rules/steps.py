"""Compiling a rule's action steps (``do:``): the action named, its parameters' templates
compiled, its parameters validated and its action's checks and lint run."""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from rulekit.actions.base import Action
from rulekit.config import Config
from rulekit.errors import Location, PluginError, RuleError, did_you_mean
from rulekit.plugins import Plugins
from rulekit.rules.compilation import Compilation, Locator
from rulekit.rules.spec import ActionStep
from rulekit.rules.templates import TemplateCompiler, templated_paths
from rulekit.validation import pydantic_errors

CHECKED_STEPS = 1024
"""Distinct plain steps whose checks a load keeps to reuse (not all of them: a large set's
would stay until the end of its load, scattered among the compiled rules)."""


class StepCompiler:
    """Compiles action steps against the loaded actions and the config."""

    def __init__(self, compilation: Compilation, templates: TemplateCompiler) -> None:
        self.compilation = compilation
        self.templates = templates
        plugins, config = compilation.plugins, compilation.config
        self.actions = {name: _made(plugins, name, config) for name in plugins.actions.names()}
        """Each action, made with its integration's settings."""
        self._checked: dict[Any, tuple[list[str], list[str]]] = {}

    def forget_checks(self) -> None:
        """Forget the checks of plain steps: checks may read files, so each load checks
        again."""
        self._checked.clear()

    def compile(
        self,
        step: Any,
        at: Locator,
        path: tuple[Any, ...],
        channels: tuple[str, ...] | None,
        errors: list[RuleError],
        warnings: list[RuleError],
        rule_name: str,
    ) -> ActionStep | None:
        """The step written as ``step`` at ``path`` of rule ``rule_name`` (which runs on
        ``channels``, None for all); None, with the problems added to ``errors``, when it is
        not valid."""
        if not isinstance(step, dict) or len(step) != 1:
            errors.append(at.error(path, "each `do` entry is a one-key mapping {action: {params}}"))
            return None
        plugins = self.compilation.plugins
        action_name, raw = next(iter(step.items()))
        if action_name not in plugins.actions:
            hint = did_you_mean(str(action_name), plugins.actions.names())
            errors.append(at.error((*path, action_name), f"unknown action {action_name!r}{hint}"))
            return None
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            errors.append(at.error((*path, action_name), "action parameters must be a mapping"))
            return None
        action_class = plugins.actions[action_name]
        sub = (*path, action_name)
        before = len(errors)
        for where in _non_finite(raw):
            errors.append(
                at.error(
                    (*sub, *where),
                    "a number must be finite: .nan and .inf cannot be stored or sent as JSON",
                )
            )
        if len(errors) > before:
            return None
        params = self.templates.values(raw, action_class, at, sub, errors)
        templated = templated_paths(raw)
        # rule sets repeat the same steps: plain parameters are checked once per load
        key = None if templated else (action_name, _frozen(raw), channels)
        checked = None if key is None else self._checked.get(key)
        if checked is None:
            checked = self._check(raw, action_class, at, sub, channels, templated, errors)
            if len(errors) > before or checked is None:
                return None
            if key is not None:
                if len(self._checked) >= CHECKED_STEPS:  # the oldest goes: see CHECKED_STEPS
                    del self._checked[next(iter(self._checked))]
                self._checked[key] = checked
        problems, lints = checked
        location = at.location(sub)
        errors.extend(RuleError(problem, location) for problem in problems)
        warnings.extend(
            RuleError(f"rule {rule_name!r}: {action_name}: {problem}", location)
            for problem in lints
        )
        try:
            unavailable = self.actions[action_name].unavailable()
        except Exception as exc:  # a plugin's bug: named where the step is, not a crash
            errors.append(at.error(sub, self._failed(action_name, "telling its availability", exc)))
            return None
        if unavailable:
            warnings.append(
                RuleError(f"rule {rule_name!r}: {action_name}: {unavailable}", location)
            )
        # without templates, the parameters were validated here; the model is made again when
        # the step first runs (ActionStep.validated)
        return ActionStep(action_name, action_class, params, location, constant=not templated)

    def _check(
        self,
        raw: dict[str, Any],
        action_class: Any,
        at: Locator,
        sub: tuple[Any, ...],
        channels: tuple[str, ...] | None,
        templated: set[tuple[Any, ...]],
        errors: list[RuleError],
    ) -> tuple[list[str], list[str]] | None:
        """Validate a step's parameters and run its action's checks (when templates do not
        leave them to each event): the problems (errors) and the lint (warnings)."""
        try:
            model = action_class.Params.model_validate(raw)
        except ValidationError as exc:
            model = None
            before = len(errors)
            for error in exc.errors(include_url=False, include_input=False):
                loc = tuple(error["loc"])
                if loc in templated or loc[:1] in templated:
                    continue
                single = ValidationError.from_exception_data(exc.title, [error])  # type: ignore[list-item]
                for (line, field_path), message in pydantic_errors(
                    single, at.tree, action_class.Params, prefix=at.where + sub
                ):
                    errors.append(RuleError(message, Location(at.file, line, field_path)))
            if len(errors) > before:
                return None
        if model is None:
            return [], []
        loose = [
            at.error((*sub, key), problem)
            for key, problem in loose_scalars(action_class.Params, raw)
            if (key,) not in templated
        ]
        if loose:
            errors.extend(loose)
            return None
        config = self.compilation.config
        targets = list(channels or config.channels)
        try:
            problems = list(action_class.check(model, targets, config))
            lints = [
                *action_class.lint(model, config),
                *action_class.lint_on(model, targets, config),
            ]
        except Exception as exc:  # a plugin's bug: named where the step is, not a crash
            errors.append(at.error(sub, self._failed(sub[-1], "checking its parameters", exc)))
            return None
        return problems, lints

    def _failed(self, action_name: str, what: str, exc: Exception) -> str:
        entry = self.compilation.plugins.actions.entries[action_name]
        return (
            f"action {action_name!r} (plugin {entry.plugin!r}) failed {what}: "
            f"{type(exc).__name__}: {exc}"
        )


def _non_finite(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The paths of the numbers in ``value`` (parameters read from YAML) that are not finite
    (``.nan``, ``.inf``, ``1e400``): no JSON holds them, so a job or an event recorded with one
    could not be stored."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


_SCALARS = {bool: "true or false", int: "a number", float: "a number", str: "text"}


def loose_scalars(model: type[BaseModel], raw: dict[str, Any]) -> list[tuple[str, str]]:
    """The parameters written as another kind of value than their field's (``1`` or ``"yes"``
    for true or false, ``true`` or ``"5"`` for a number): pydantic reads them leniently, as it
    must a rendered template's text, but a value written as it is says what it is, as the
    JSON Schema of ``rulekit schema`` does. ``(key, problem)`` pairs."""
    found = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in raw or raw[key] is None:
            continue
        kinds = _scalar_kinds(info.annotation)
        if not kinds:
            continue
        value = raw[key]
        kind = next((k for k in _SCALARS if type(value) is k), None)  # (bool is no int here)
        if (
            kind is None
            or kind in kinds
            or ({kind, float} <= {int, float} and kinds & {int, float})
        ):
            continue
        wanted = " or ".join(dict.fromkeys(_SCALARS[k] for k in kinds if k in _SCALARS))
        found.append((key, f"expects {wanted}, not {_SCALARS[kind]}"))
    return found


def _scalar_kinds(annotation: Any) -> set[type] | None:
    """The scalar types a field's annotation takes (``bool``, ``int | str``, ``bool | None``),
    or None when it takes anything else as well (a model, a list, a literal)."""
    if annotation in _SCALARS:
        return {annotation}
    args = get_args(annotation)
    if get_origin(annotation) not in (Union, UnionType) or not args:
        return None
    kinds: set[type] = set()
    for arg in args:
        if arg is type(None):
            continue
        if arg not in _SCALARS:
            return None
        kinds.add(arg)
    return kinds


def _made(plugins: Plugins, name: str, config: Config) -> Action:
    """Action ``name``, made with its integration's settings; a plugin's action that cannot be
    made is an error naming the plugin."""
    entry = plugins.actions.entries[name]
    try:
        return entry.value(config.integrations.get(entry.value.integration or ""))
    except Exception as exc:
        raise PluginError(
            f"action {name!r} (plugin {entry.plugin!r}) cannot be made: {type(exc).__name__}: {exc}"
        ) from exc


def _frozen(value: Any) -> Any:
    """``value`` (data read from YAML) as a hashable key, types kept (``1`` is not ``true``)."""
    if isinstance(value, dict):
        return (dict, tuple((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    return (type(value), value)
