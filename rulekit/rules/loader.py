"""Loading rules: the one choke point from YAML files to compiled rules.

Every problem of every file is collected and reported together, each with file, line, field
path, a one-line reason and a "did you mean" for near misses. Nothing runs until all is valid.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rulekit import sources, yamlsource
from rulekit.config import Config
from rulekit.errors import (
    Location,
    RuleError,
    TemplateError,
    ValidationErrors,
    did_you_mean,
)
from rulekit.event import EVENT_NAMES
from rulekit.expr.codegen import Program, Slot, simple_template_body, split_simple_template
from rulekit.expr.markup import defer
from rulekit.expr.parse import (
    ROOT_TYPES,
    check_nesting,
    check_references,
    parse_expression,
    reads_name,
)
from rulekit.expr.sandbox import Sandbox, jinja_names, render_stream, with_budget
from rulekit.expr.timefunctions import (
    CALENDAR_FUNCTIONS,
    datetime_filter,
    time_globals,
    unknown_calendars,
)
from rulekit.plugins import Plugins
from rulekit.rules.collector import collector_paused
from rulekit.rules.lint import lint_rules
from rulekit.rules.spec import (
    DEFAULT_MAX_LATE,
    ActionStep,
    AllOf,
    AnyOf,
    BusinessDelay,
    Condition,
    Either,
    Leaf,
    NotOf,
    Rule,
    RuleSpec,
    Timing,
    Value,
)
from rulekit.team import unknown_groups
from rulekit.validation import dotted, pydantic_errors

MAX_FILE_BYTES = 1024 * 1024
RULE_SUFFIXES = (".yaml", ".yml")
CONDITION_KEYS = ("all", "any", "not")


@dataclass
class RuleSet:
    """A loaded, compiled set of rules, with the warnings found while loading."""

    rules: list[Rule]
    warnings: list[RuleError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    suites: list[Path] = field(default_factory=list)
    version: str = ""
    reads_team: bool = False
    """Whether a condition or template reads ``team``: the daemon then sends the team's
    presence and open counts with each event (:mod:`rulekit.team`)."""


def rule_files(path: Path) -> list[Path]:
    """The YAML files of a rules directory, in name order (or the file itself)."""
    return sources.listing(path, _rule_files)


def _rule_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(2, "no such file or directory", str(path))
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in RULE_SUFFIXES and p.is_file())


def display_path(path: Path) -> str:
    """A path as people should read it in messages: relative to the working directory when
    it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def is_suite(data: Any) -> bool:
    """A YAML document with a top-level ``tests:`` key is a rule test suite, not rules."""
    return isinstance(data, dict) and "tests" in data


class RuleLoader:
    """Loads and compiles rules against the loaded plugins and a config."""

    def __init__(self, plugins: Plugins, config: Config) -> None:
        self.plugins = plugins
        self.config = config
        self.environment = self._sandbox(None)
        # the sandbox's own globals (``range``, ``dict``) and the plugins'
        self.program = Program(self.environment, dict(self.environment.globals))
        self.known_names = set(ROOT_TYPES) | set(self.environment.globals)
        self.reads_team = False
        """Whether a condition or template loaded so far reads ``team``."""
        self._team_at: Location | None = None
        """Where the first of them is."""
        self._sandboxes: dict[Any, Sandbox] = {None: self.environment}
        self._pending: list[tuple[Any, str, Slot]] = []
        self._problems: dict[str, list[str]] = {}
        self._calendar_warnings: list[RuleError] = []
        self._checked_steps: dict[Any, tuple[Any, list[str], list[str]]] = {}
        self.actions = {
            name: plugins.actions[name](
                config.integrations.get(plugins.actions[name].integration or "")
            )
            for name in plugins.actions.names()
        }

    def _bind_later(self, target: Any, slot: Slot, attribute: str = "function") -> None:
        """Point ``target.<attribute>`` (``matcher`` for rules) at the slot's function once the
        program is built."""
        name = "matcher" if isinstance(target, Rule) else attribute
        self._pending.append((target, name, slot))

    def _sandbox(self, escaper: Any) -> Sandbox:
        env = Sandbox(escaper)
        for name, entry in self.plugins.templates.filters.entries.items():
            env.filters[name] = entry.value
        for name, entry in self.plugins.templates.tests.entries.items():
            env.tests[name] = entry.value
        for name, entry in self.plugins.templates.globals.entries.items():
            env.globals[name] = entry.value
        env.globals.update(time_globals(self.config.calendars))
        env.filters["datetime"] = datetime_filter(self.config.timezone)
        return env

    # -- files ---------------------------------------------------------------------------------
    def load(self, path: Path) -> RuleSet:
        """Load every rules file under ``path``; raise ValidationErrors listing all problems."""
        with collector_paused():
            try:
                return self._load(path)
            finally:
                self._checked_steps.clear()  # checks may read files: each load checks again

    def _load(self, path: Path) -> RuleSet:
        errors: list[RuleError] = []
        warnings: list[RuleError] = []
        rules: list[Rule] = []
        ruleset = RuleSet(rules=rules, warnings=warnings)
        digest = hashlib.sha256()
        try:
            files = rule_files(path)
        except FileNotFoundError:
            raise ValidationErrors(
                [RuleError("no such file or directory", Location(str(path)))]
            ) from None
        names: dict[str, Location] = {}
        for file in files:
            data = self._read(file, errors, digest)
            if data is None:
                continue
            if is_suite(data):
                ruleset.suites.append(file)
                continue
            ruleset.files.append(file)
            self._load_file(file, data, rules, names, errors, warnings)
        if errors:
            raise ValidationErrors(errors)
        self.program.build()
        for target, attribute, slot in self._pending:
            setattr(target, attribute, slot.function)
        self._pending.clear()
        warnings.extend(lint_rules(rules, self.config))
        warnings.extend(self._calendar_warnings)
        self._calendar_warnings.clear()
        ruleset.version = digest.hexdigest()[:12]
        ruleset.reads_team = self.reads_team
        if self._team_at is not None and not any(
            agent.token_sha256 for agent in self.config.directory.agents
        ):
            warnings.append(
                RuleError(
                    "rules read team, but no agent can sign in to the console (token_sha256): "
                    "presence is never tracked, and every agent with access counts as online",
                    self._team_at,
                )
            )
        return ruleset

    def _read(self, file: Path, errors: list[RuleError], digest: Any) -> Any:
        name = display_path(file)
        try:
            raw = sources.read_bytes(file, MAX_FILE_BYTES)
        except yamlsource.FileTooLarge:
            errors.append(RuleError(f"the file is over {MAX_FILE_BYTES} bytes", Location(name)))
            return None
        except OSError as exc:
            errors.append(RuleError(f"cannot read the file: {exc.strerror}", Location(name)))
            return None
        digest.update(name.encode() + b"\0" + raw)
        try:
            return yamlsource.load(raw)
        except yamlsource.YamlSyntaxError as exc:
            errors.append(RuleError(f"invalid YAML: {exc.message}", Location(name, exc.line)))
            return None

    def _load_file(
        self,
        file: Path,
        data: Any,
        rules: list[Rule],
        names: dict[str, Location],
        errors: list[RuleError],
        warnings: list[RuleError],
    ) -> None:
        name = display_path(file)
        if data is None:
            return
        prefix: tuple[Any, ...] = ()
        items = data
        if isinstance(data, dict):
            unknown = [key for key in data if key != "rules"]
            if unknown:
                hint = did_you_mean(str(unknown[0]), ["rules", "tests"])
                errors.append(
                    RuleError(
                        f"unknown top-level key {unknown[0]!r}{hint}: a rules file is a list of "
                        "rules or a mapping with `rules:`",
                        Location(name, yamlsource.line_of(data, (unknown[0],))),
                    )
                )
                return
            items, prefix = data.get("rules") or [], ("rules",)
        if not isinstance(items, list):
            errors.append(RuleError("expected a list of rules", Location(name, 1)))
            return
        for index, item in enumerate(items):
            where = (*prefix, index)
            rule = self._load_rule(name, data, where, item, len(rules), errors, warnings)
            if rule is None:
                continue
            if rule.name in names:
                errors.append(
                    RuleError(
                        f"rule name {rule.name!r} is already used at {names[rule.name]}",
                        rule.location,
                    )
                )
                continue
            names[rule.name] = rule.location
            rules.append(rule)

    # -- one rule ------------------------------------------------------------------------------
    def _load_rule(
        self,
        file: str,
        tree: Any,
        where: tuple[Any, ...],
        item: Any,
        position: int,
        errors: list[RuleError],
        warnings: list[RuleError],
    ) -> Rule | None:
        at = _Locator(file, tree, where)
        if not isinstance(item, dict):
            errors.append(at.error((), "a rule must be a mapping with name, on and do"))
            return None
        before = len(errors)
        try:
            spec = RuleSpec.model_validate(item)
        except ValidationError as exc:
            for (line, path), message in pydantic_errors(exc, tree, RuleSpec, prefix=where):
                path = path.replace(".if_", ".if")
                for tag in (".after:duration", ".after:business"):  # ``After``'s union tags
                    path = path.replace(tag, "")
                errors.append(RuleError(_named(item, message), Location(file, line, path)))
            # keep going: the conditions and actions may hold more errors worth reporting now
            if item.get("if") is not None:
                self._condition(item["if"], at, ("if",), errors)
            if isinstance(item.get("do"), list):
                for index, step in enumerate(item["do"]):
                    self._step(step, at, ("do", index), None, errors, [], str(item.get("name")))
            return None
        channels = tuple(spec.on.channel) if spec.on.channel else None
        events = tuple(spec.on.event) if spec.on.event else None
        condition = None
        if spec.if_ is not None:
            condition = self._condition(spec.if_, at, ("if",), errors)
        steps = []
        for index, step in enumerate(spec.do):
            compiled = self._step(step, at, ("do", index), channels, errors, warnings, spec.name)
            if compiled is not None:
                steps.append(compiled)
        timing = self._timing(spec, at, errors, warnings)
        if len(errors) > before:
            return None
        matcher = None
        if condition is not None:
            matcher_slot = self.program.add_function(self._matcher_code(condition))
        rule = Rule(
            name=spec.name,
            position=position,
            location=at.location(()),
            channels=channels,
            events=events,
            condition=condition,
            matcher=matcher,
            steps=steps,
            description=spec.description,
            stop=spec.stop,
            cooldown=spec.cooldown,
            allow_own_events=spec.allow_own_events,
            timing=timing,
        )
        if condition is not None:
            rule.conjuncts = _conjuncts(condition)
            self._bind_later(rule, matcher_slot)
        if not spec.enabled:
            return None
        return rule

    def _lint_calendars(
        self, node: Any, at: _Locator, path: tuple[Any, ...], source: str | None = None
    ) -> None:
        """Calendars named in an expression that the config does not define: warnings (like
        an unconfigured channel), so that rules load with another config; the call fails when
        it runs."""
        where = f" in {source!r}" if source is not None else ""
        for problem in unknown_calendars(node, self.config.calendars):
            self._calendar_warnings.append(at.error(path, f"{problem}{where}"))

    def _timing(
        self, spec: RuleSpec, at: _Locator, errors: list[RuleError], warnings: list[RuleError]
    ) -> Timing | None:
        """``after:`` and the keys beside it (``unless``, ``cancel_on``, ``restart``,
        ``max_late``), which mean nothing without it."""
        if spec.after is None:
            for key in ("unless", "cancel_on", "restart", "max_late"):
                if getattr(spec, key) is not None:
                    errors.append(
                        at.error((key,), f"`{key}` belongs to a timed rule: add `after:`")
                    )
            return None
        timing = Timing(after=spec.after if isinstance(spec.after, timedelta) else timedelta())
        if isinstance(spec.after, BusinessDelay):
            timing.after, timing.calendar = spec.after.business, spec.after.calendar
            if spec.after.calendar not in self.config.calendars:
                calendars = list(self.config.calendars)
                hint = did_you_mean(spec.after.calendar, calendars)
                warnings.append(
                    at.error(
                        ("after", "calendar"),
                        f"unknown calendar {spec.after.calendar!r}{hint} "
                        f"(configured: {', '.join(calendars) or 'none'})",
                    )
                )
        timing.restart = bool(spec.restart)
        timing.max_late = spec.max_late or DEFAULT_MAX_LATE
        timing.cancel_on = tuple(spec.cancel_on or ())
        for index, name in enumerate(timing.cancel_on):
            if name not in EVENT_NAMES:
                hint = did_you_mean(name, EVENT_NAMES)
                warnings.append(at.error(("cancel_on", index), f"unknown event {name!r}{hint}"))
        if spec.unless is not None:
            timing.unless = self._condition(spec.unless, at, ("unless",), errors)
            if timing.unless is not None:
                slot = self.program.add_function(self._matcher_code(timing.unless))
                self._bind_later(timing, slot, attribute="unless_matcher")
        return timing

    def _condition(
        self, value: Any, at: _Locator, path: tuple[Any, ...], errors: list[RuleError]
    ) -> Condition | None:
        if isinstance(value, list):
            if not value:
                errors.append(at.error(path, "an empty condition list; remove `if` or add one"))
                return None
            children = [self._condition(v, at, (*path, i), errors) for i, v in enumerate(value)]
            if any(c is None for c in children):
                return None
            return children[0] if len(children) == 1 else AllOf(children)  # type: ignore[arg-type]
        if isinstance(value, dict):
            if len(value) != 1 or next(iter(value)) not in CONDITION_KEYS:
                key = str(next(iter(value), ""))
                hint = did_you_mean(key, CONDITION_KEYS)
                errors.append(
                    at.error(
                        path,
                        f"a condition is an expression string or one of all/any/not{hint}"
                        " (a `:` inside an expression needs quotes)",
                    )
                )
                return None
            key, inner = next(iter(value.items()))
            sub = (*path, key)
            if key == "not":
                child = self._condition(inner, at, sub, errors)
                return None if child is None else NotOf(child)
            if not isinstance(inner, list) or not inner:
                errors.append(at.error(sub, f"`{key}` needs a non-empty list of conditions"))
                return None
            children = [self._condition(v, at, (*sub, i), errors) for i, v in enumerate(inner)]
            if any(c is None for c in children):
                return None
            return (AllOf if key == "all" else AnyOf)(children)  # type: ignore[arg-type]
        if isinstance(value, str):
            try:
                expr, code = self.program.parse_condition(value)
            except TemplateError as exc:
                # an unknown name stops code generation; the reference check says it better
                for problem in self._reference_problems(value) or [str(exc)]:
                    errors.append(at.error(path, f"{problem} in {value!r}"))
                return None
            problems = self._problems.get(value)
            if problems is None:
                problems = self._problems[value] = check_references(
                    expr,
                    self.known_names,
                    filters=self.environment.filters,
                    tests=self.environment.tests,
                ) + self._team_problems(expr, value)
            if self.reads_team and self._team_at is None:
                self._team_at = at.location(path)
            if any(name in value for name in CALENDAR_FUNCTIONS):  # else no tree to walk
                self._lint_calendars(expr, at, path, value)
            for problem in problems:
                errors.append(at.error(path, f"{problem} in {value!r}"))
            if problems:
                return None
            leaf = Leaf(value, code, at.location(path), self.program.compile_function, expr)
            return leaf
        kind = "a boolean" if isinstance(value, bool) else type(value).__name__
        errors.append(at.error(path, f"a condition must be an expression string, not {kind}"))
        return None

    def _team_problems(self, node: Any, source: str | None = None) -> list[str]:
        """Note that the rules read ``team``; problems with the groups they name."""
        if (source is not None and "team" not in source) or not reads_name(node, "team"):
            return []
        self.reads_team = True
        return unknown_groups(node, self.config.directory.groups)

    def _reference_problems(self, source: str) -> list[str]:
        try:
            expr = parse_expression(source, self.environment)
        except TemplateError:
            return []
        return check_references(
            expr, self.known_names, filters=self.environment.filters, tests=self.environment.tests
        )

    def _matcher_code(self, condition: Condition) -> str:
        if isinstance(condition, Leaf):
            return f"({condition.code})"
        if isinstance(condition, NotOf):
            return f"(not {self._matcher_code(condition.child)})"
        joiner = " and " if isinstance(condition, AllOf) else " or "
        return "(" + joiner.join(self._matcher_code(c) for c in condition.children) + ")"

    def _step(
        self,
        step: Any,
        at: _Locator,
        path: tuple[Any, ...],
        channels: tuple[str, ...] | None,
        errors: list[RuleError],
        warnings: list[RuleError],
        rule_name: str,
    ) -> ActionStep | None:
        if not isinstance(step, dict) or len(step) != 1:
            errors.append(at.error(path, "each `do` entry is a one-key mapping {action: {params}}"))
            return None
        action_name, raw = next(iter(step.items()))
        if action_name not in self.plugins.actions:
            hint = did_you_mean(str(action_name), self.plugins.actions.names())
            errors.append(at.error((*path, action_name), f"unknown action {action_name!r}{hint}"))
            return None
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            errors.append(at.error((*path, action_name), "action parameters must be a mapping"))
            return None
        action_class = self.plugins.actions[action_name]
        sub = (*path, action_name)
        before = len(errors)
        params = self._values(raw, action_class, at, sub, errors)
        templated = _templated_paths(raw)
        # rule sets repeat the same steps: plain parameters are checked once per load
        key = None if templated else (action_name, _frozen(raw), channels)
        checked = None if key is None else self._checked_steps.get(key)
        if checked is None:
            checked = self._check_step(raw, action_class, at, sub, channels, templated, errors)
            if len(errors) > before or checked is None:
                return None
            if key is not None:
                self._checked_steps[key] = checked
        model, problems, lints = checked
        location = at.location(sub)
        errors.extend(RuleError(problem, location) for problem in problems)
        warnings.extend(
            RuleError(f"rule {rule_name!r}: {action_name}: {problem}", location)
            for problem in lints
        )
        unavailable = self.actions[action_name].unavailable()
        if unavailable:
            warnings.append(
                RuleError(f"rule {rule_name!r}: {action_name}: {unavailable}", location)
            )
        action_step = ActionStep(
            action_name, action_class, params, location, constant=not templated
        )
        if not templated:
            action_step.validated = model  # nothing to render per event: validate once, here
        return action_step

    def _check_step(
        self,
        raw: dict[str, Any],
        action_class: Any,
        at: _Locator,
        sub: tuple[Any, ...],
        channels: tuple[str, ...] | None,
        templated: set[tuple[Any, ...]],
        errors: list[RuleError],
    ) -> tuple[Any, list[str], list[str]] | None:
        """Validate a step's parameters and run its action's checks: the model (None when
        templates leave it to each event), the problems (errors) and the lint (warnings)."""
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
            return None, [], []
        targets = list(channels or self.config.channels)
        problems = list(action_class.check(model, targets, self.config))
        lints = [
            *action_class.lint(model, self.config),
            *action_class.lint_on(model, targets, self.config),
        ]
        return model, problems, lints

    def _values(
        self,
        raw: dict[str, Any],
        action_class: Any,
        at: _Locator,
        path: tuple[Any, ...],
        errors: list[RuleError],
    ) -> dict[str, Any]:
        # markup actions: values become placeholders, escaped once the action has said which
        # markup each rendered leaf is (rulekit.expr.markup); plain actions get values as they are
        escaper = defer if action_class.markup else None
        return {
            key: self._value(value, escaper, at, (*path, key), errors) for key, value in raw.items()
        }

    def _value(
        self, value: Any, escaper: Any, at: _Locator, path: tuple[Any, ...], errors: list[RuleError]
    ) -> Any:
        if isinstance(value, dict):
            return {k: self._value(v, escaper, at, (*path, k), errors) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, escaper, at, (*path, i), errors) for i, v in enumerate(value)]
        if not isinstance(value, str) or not _is_template(value):
            return value
        try:
            compiled = self._template(value, escaper)
            if self.reads_team and self._team_at is None:
                self._team_at = at.location(path)
            if any(name in value for name in CALENDAR_FUNCTIONS):
                self._lint_calendars(self.environment.parse(value), at, path)
            return compiled
        except TemplateError as exc:
            errors.append(at.error(path, f"template: {exc}"))
        except _ReferenceProblems as exc:
            for problem in exc.problems:
                errors.append(at.error(path, f"template: {problem}"))
        return None

    def _template(self, source: str, escaper: Any) -> Value:
        parts = split_simple_template(source)
        if parts is not None:
            try:
                for is_expression, text in parts:
                    if is_expression:
                        expr = parse_expression(text, self.environment)
                        self._check(expr)
                body = simple_template_body(self.program, parts, escaper)
            except TemplateError:
                parts = None
            else:
                value = Value()
                self._bind_later(value, self.program.add_function(body), attribute="render")
                return value
        environment = self._sandboxes.get(escaper)
        if environment is None:
            environment = self._sandboxes[escaper] = self._sandbox(escaper)
        try:
            tree = check_nesting(environment.parse(source))
            self._check(tree, local_names=jinja_names(tree))
            template = environment.from_string(tree)
        except TemplateError:
            raise
        except _ReferenceProblems:
            raise
        except Exception as exc:  # jinja2's TemplateSyntaxError and friends
            message = getattr(exc, "message", None) or str(exc)
            raise TemplateError(f"syntax error: {message}") from None

        def render(e: Any, now: Any, env: Any) -> str:
            context = {
                "channel": e.channel, "event": e.event, "conversation": e.conversation,
                "client": e.client, "message": e.message, "agent": e.agent, "origin": e.origin,
                "recovered": e.recovered, "changed": e.changed, "now": now, "env": env,
                "trigger": e.trigger, "team": e.team,
            }  # fmt: skip
            return with_budget(lambda: render_stream(template.generate(context)))

        return Value(render=render)

    def _check(self, node: Any, local_names: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        problems = check_references(
            node,
            self.known_names,
            filters=self.environment.filters,
            tests=self.environment.tests,
            local_names=local_names,
        ) + self._team_problems(node)
        if problems:
            raise _ReferenceProblems(problems)


class _ReferenceProblems(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems


@dataclass
class _Locator:
    file: str
    tree: Any
    where: tuple[Any, ...]

    def location(self, path: tuple[Any, ...]) -> Location:
        full = self.where + path
        return Location(self.file, yamlsource.line_of(self.tree, full), dotted(full))

    def error(self, path: tuple[Any, ...], message: str) -> RuleError:
        return RuleError(message, self.location(path))


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def _templated_paths(raw: Any, prefix: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    found: set[tuple[Any, ...]] = set()
    if isinstance(raw, dict):
        for key, value in raw.items():
            found |= _templated_paths(value, (*prefix, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found |= _templated_paths(value, (*prefix, index))
    elif isinstance(raw, str) and _is_template(raw):
        found.add(prefix)
    return found


def _frozen(value: Any) -> Any:
    """``value`` (data read from YAML) as a hashable key, types kept (``1`` is not ``true``)."""
    if isinstance(value, dict):
        return (dict, tuple((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    return (type(value), value)


def _named(item: Any, message: str) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"rule {name!r}: {message}" if isinstance(name, str) else message


def _conjuncts(condition: Condition) -> list[Any]:
    """The expression nodes that must all be true for ``condition`` to hold (for indexing);
    an ``any`` (or an ``or``) is an :class:`~rulekit.rules.spec.Either` of its branches'
    conjuncts."""
    from jinja2 import nodes

    out: list[Any] = []
    stack: list[Any] = [condition]
    while stack:
        current = stack.pop()
        if isinstance(current, AllOf):
            stack.extend(reversed(current.children))
        elif isinstance(current, AnyOf):
            out.append(Either([_conjuncts(child) for child in current.children]))
        elif isinstance(current, Leaf):
            parts = [current.node]
            while parts:
                part = parts.pop(0)
                if isinstance(part, nodes.And):
                    parts[:0] = [part.left, part.right]
                elif isinstance(part, nodes.Or):
                    out.append(Either([_node_conjuncts(part.left), _node_conjuncts(part.right)]))
                else:
                    out.append(part)
    return out


def _node_conjuncts(node: Any) -> list[Any]:
    from jinja2 import nodes

    if isinstance(node, nodes.And):
        return _node_conjuncts(node.left) + _node_conjuncts(node.right)
    if isinstance(node, nodes.Or):
        return [Either([_node_conjuncts(node.left), _node_conjuncts(node.right)])]
    return [node]
