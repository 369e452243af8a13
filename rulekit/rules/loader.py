"""Loading rules: the one choke point from YAML files to compiled rules.

Every problem of every file is collected and reported together, each with file, line, field
path, a one-line reason and a "did you mean" for near misses. Nothing runs until all is valid.
Conditions, templates and action steps compile in :mod:`.conditions`, :mod:`.templates` and
:mod:`.steps`, through one :class:`~rulekit.rules.compilation.Compilation`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rulekit import yamlsource
from rulekit.config import Config
from rulekit.errors import Location, RuleError, ValidationErrors, did_you_mean, listed
from rulekit.event import EVENT_NAMES
from rulekit.expr.codegen import Program
from rulekit.expr.patterns import counted_patterns
from rulekit.plugins import Plugins
from rulekit.rules.collector import collector_paused
from rulekit.rules.compilation import Compilation, Locator
from rulekit.rules.conditions import ConditionCompiler, conjuncts, forget_trees
from rulekit.rules.files import (
    Allowance,
    display_path,
    is_suite,
    read_rules_file,
    rule_files,
)
from rulekit.rules.lint import hidden_rules, lint_rule
from rulekit.rules.spec import DEFAULT_MAX_LATE, BusinessDelay, Rule, RuleSpec, Timing
from rulekit.rules.steps import StepCompiler
from rulekit.rules.templates import TemplateCompiler
from rulekit.validation import pydantic_errors


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


class RuleLoader:
    """Loads and compiles rules against the loaded plugins and a config."""

    def __init__(self, plugins: Plugins, config: Config) -> None:
        self.plugins = plugins
        self.config = config
        self.compilation = Compilation(plugins, config)
        self.conditions = ConditionCompiler(self.compilation)
        self.steps = StepCompiler(self.compilation, TemplateCompiler(self.compilation))
        self.actions = self.steps.actions
        self._tuples: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def program(self) -> Program:
        """The program the rules' matchers and simple templates are generated into."""
        return self.compilation.program

    @property
    def reads_team(self) -> bool:
        """Whether a condition or template loaded so far reads ``team``."""
        return self.compilation.reads_team

    # -- files ---------------------------------------------------------------------------------
    def load(self, path: Path, each: Callable[[Rule], None] | None = None) -> RuleSet:
        """Load every rules file under ``path``; raise ValidationErrors listing all problems.

        ``each`` is called with every rule as soon as it is compiled; the rule's expression
        trees (its conjuncts, each condition's node) are dropped once it returns (memory:
        :mod:`rulekit.engine.analysis`). Without it, they are kept."""
        with collector_paused(), counted_patterns():
            try:
                return self._load(path, each)
            finally:
                self.steps.forget_checks()  # checks may read files: each load checks again

    def _load(self, path: Path, each: Callable[[Rule], None] | None) -> RuleSet:
        errors: list[RuleError] = []
        warnings: list[RuleError] = []
        rules: list[Rule] = []
        ruleset = RuleSet(rules=rules, warnings=warnings)
        digest = hashlib.sha256()
        try:
            files = rule_files(path)
        except FileNotFoundError:
            raise ValidationErrors(
                [RuleError("no such file or directory", Location(display_path(path)))]
            ) from None
        except OSError as exc:  # permission denied, a name too long, a symlink loop
            raise ValidationErrors(
                [RuleError(f"cannot read the rules: {exc.strerror}", Location(display_path(path)))]
            ) from None
        names: dict[str, Location] = {}
        linted: list[RuleError] = []  # each rule's lint, taken while its trees are there
        allowance = Allowance()
        for file in files:
            data = read_rules_file(file, errors, digest, allowance)
            if data is None:
                continue
            if is_suite(data):
                ruleset.suites.append(file)
                continue
            ruleset.files.append(file)
            self._load_file(file, data, rules, names, errors, warnings, linted, each)
            data = None  # the file's tree, before the next is read
        if errors:
            raise ValidationErrors(errors)
        compilation = self.compilation
        compilation.build()
        warnings.extend(linted)
        warnings.extend(hidden_rules(rules))
        warnings.extend(compilation.calendar_warnings)
        compilation.calendar_warnings.clear()
        ruleset.version = digest.hexdigest()[:12]
        ruleset.reads_team = compilation.reads_team
        if compilation.team_at is not None and not any(
            agent.token_sha256 for agent in self.config.directory.agents
        ):
            warnings.append(
                RuleError(
                    "rules read team, but no agent can sign in to the console (token_sha256): "
                    "presence is never tracked, and every agent with access counts as online",
                    compilation.team_at,
                )
            )
        ruleset.warnings = listed(warnings, RuleError, "warnings")
        return ruleset

    def _load_file(
        self,
        file: Path,
        data: Any,
        rules: list[Rule],
        names: dict[str, Location],
        errors: list[RuleError],
        warnings: list[RuleError],
        linted: list[RuleError],
        each: Callable[[Rule], None] | None,
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
            linted.extend(lint_rule(rule, self.config))
            if each is not None:
                each(rule)
                forget_trees(rule)

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
        at = Locator(file, tree, where)
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
                self.conditions.compile(item["if"], at, ("if",), errors)
            if isinstance(item.get("do"), list):
                for index, step in enumerate(item["do"]):
                    self.steps.compile(
                        step, at, ("do", index), None, errors, [], str(item.get("name"))
                    )
            return None
        channels = self._shared(spec.on.channel)
        events = self._shared(spec.on.event)
        condition = None
        if spec.if_ is not None:
            condition = self.conditions.compile(spec.if_, at, ("if",), errors)
        steps = []
        for index, step in enumerate(spec.do):
            compiled = self.steps.compile(
                step, at, ("do", index), channels, errors, warnings, spec.name
            )
            if compiled is not None:
                steps.append(compiled)
        timing = self._timing(spec, at, errors, warnings)
        if len(errors) > before:
            return None
        rule = Rule(
            name=spec.name,
            position=position,
            location=at.location(()),
            channels=channels,
            events=events,
            condition=condition,
            steps=steps,
            description=spec.description,
            stop=spec.stop,
            cooldown=spec.cooldown,
            allow_own_events=spec.allow_own_events,
            timing=timing,
        )
        if condition is not None:
            rule.conjuncts = conjuncts(condition)
        if not spec.enabled:
            return None
        return rule

    def _shared(self, names: list[str] | None) -> tuple[str, ...] | None:
        """``names`` as a tuple, None when there are none; rules of a large set name the same
        channels and events: equal tuples are one object (kept once, pickled once)."""
        if not names:
            return None
        found = tuple(names)
        return self._tuples.setdefault(found, found)

    def _timing(
        self, spec: RuleSpec, at: Locator, errors: list[RuleError], warnings: list[RuleError]
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
            calendar = self.config.calendars.get(spec.after.calendar)
            if calendar is not None and not calendar.has_hours:
                warnings.append(
                    at.error(
                        ("after", "calendar"),
                        f"calendar {spec.after.calendar!r} has no opening hours: its business "
                        "time never passes, so this rule sets no timer (each match is an error)",
                    )
                )
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
            timing.unless = self.conditions.compile(spec.unless, at, ("unless",), errors)
        return timing


def _named(item: Any, message: str) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"rule {name!r}: {message}" if isinstance(name, str) else message
