"""What compiling one rule set shares: the sandbox expressions and templates are checked
against, the program their functions are generated into, and what the checks learn on the way
(whether the rules read ``team``, calendars the config does not define).

Conditions (:mod:`.conditions`), templates (:mod:`.templates`) and action steps
(:mod:`.steps`) all compile through one :class:`Compilation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rulekit import yamlsource
from rulekit.config import Config
from rulekit.errors import Location, PluginError, RuleError, TemplateError
from rulekit.expr.codegen import Program, Slot
from rulekit.expr.parse import (
    CONSTANTS,
    ROOT_TYPES,
    check_references,
    parse_expression,
    reads_name,
)
from rulekit.expr.sandbox import Sandbox
from rulekit.expr.timefunctions import datetime_filter, time_globals, unknown_calendars
from rulekit.plugins import Plugins
from rulekit.team import unknown_groups
from rulekit.validation import dotted


@dataclass
class Locator:
    """Where a rule is in its file: turns a field path inside the rule into a location."""

    file: str
    tree: Any
    where: tuple[Any, ...]

    def location(self, path: tuple[Any, ...]) -> Location:
        """The file, line and dotted field path of ``path`` inside the rule."""
        full = self.where + path
        return Location(self.file, yamlsource.line_of(self.tree, full), dotted(full))

    def error(self, path: tuple[Any, ...], message: str) -> RuleError:
        """A problem at ``path`` inside the rule."""
        return RuleError(message, self.location(path))


class ReferenceProblems(Exception):
    """Names an expression or template reads that nothing defines."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems


class Compilation:
    """The sandbox, the program and the findings shared by everything one loader compiles."""

    def __init__(self, plugins: Plugins, config: Config) -> None:
        self.plugins = plugins
        self.config = config
        self.environment = self.new_sandbox(None)
        # the sandbox's own globals (``range``, ``dict``) and the plugins'
        self.program = Program(self.environment, dict(self.environment.globals))
        self.known_names = set(ROOT_TYPES) | set(self.environment.globals)
        self.reads_team = False
        """Whether a condition or template compiled so far reads ``team``."""
        self.team_at: Location | None = None
        """Where the first of them is."""
        self.calendar_warnings: list[RuleError] = []
        """Calendars named in expressions that the config does not define."""
        self._sandboxes: dict[Any, Sandbox] = {None: self.environment}
        self._pending: list[tuple[Any, str, Slot]] = []

    def new_sandbox(self, escaper: Any) -> Sandbox:
        """A sandbox with the plugins' filters, tests and globals and the time functions,
        escaping output with ``escaper`` (None: as it is)."""
        env = Sandbox(escaper)
        times = time_globals(self.config.calendars)
        builtin = {
            "filter": {*env.filters, "datetime"},
            "test": set(env.tests),
            "global": {*env.globals, *times, *ROOT_TYPES, *CONSTANTS},
        }
        templates = self.plugins.templates
        for kind, registry, target in (
            ("filter", templates.filters, env.filters),
            ("test", templates.tests, env.tests),
            ("global", templates.globals, env.globals),
        ):
            for name, entry in registry.entries.items():
                if name in builtin[kind]:
                    # replacing one would change what every rule's templates mean (a
                    # ``defined`` of other rules, a ``range`` without its budget), silently
                    raise PluginError(
                        f"plugin {entry.plugin!r} registers template {kind} {name!r}, "
                        f"which is built in; give it another name"
                    )
                target[name] = entry.value
        env.globals.update(times)
        env.filters["datetime"] = datetime_filter(self.config.timezone)
        return env

    def sandbox(self, escaper: Any) -> Sandbox:
        """The sandbox for ``escaper``, made once per loader."""
        environment = self._sandboxes.get(escaper)
        if environment is None:
            environment = self._sandboxes[escaper] = self.new_sandbox(escaper)
        return environment

    def bind_later(self, target: Any, slot: Slot, attribute: str = "function") -> None:
        """Point ``target.<attribute>`` at the slot's function once the program is built."""
        self._pending.append((target, attribute, slot))

    def build(self) -> None:
        """Generate the program and bind every function compiled since the last build."""
        self.program.build()
        for target, attribute, slot in self._pending:
            setattr(target, attribute, slot.function)
        self._pending.clear()

    def note_team(self, at: Locator, path: tuple[Any, ...]) -> None:
        """Remember ``path`` as where the rules first read ``team``, if they do by now."""
        if self.reads_team and self.team_at is None:
            self.team_at = at.location(path)

    def team_problems(self, node: Any, source: str | None = None) -> list[str]:
        """Note that the rules read ``team``; problems with the groups they name."""
        if (source is not None and "team" not in source) or not reads_name(node, "team"):
            return []
        self.reads_team = True
        return unknown_groups(node, self.config.directory.groups)

    def lint_calendars(
        self, node: Any, at: Locator, path: tuple[Any, ...], source: str | None = None
    ) -> None:
        """Calendars named in an expression that the config does not define: warnings (like
        an unconfigured channel), so that rules load with another config; the call fails when
        it runs."""
        where = f" in {source!r}" if source is not None else ""
        for problem in unknown_calendars(node, self.config.calendars):
            self.calendar_warnings.append(at.error(path, f"{problem}{where}"))

    def reference_problems(self, source: str) -> list[str]:
        """Names the expression ``source`` reads that nothing defines ([] when it does not
        parse: the parse error says it better)."""
        try:
            expr = parse_expression(source, self.environment)
        except TemplateError:
            return []
        return check_references(
            expr, self.known_names, filters=self.environment.filters, tests=self.environment.tests
        )

    def check(self, node: Any, local_names: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Raise :class:`ReferenceProblems` when ``node`` reads a name nothing defines or a
        team group the directory does not have."""
        problems = check_references(
            node,
            self.known_names,
            filters=self.environment.filters,
            tests=self.environment.tests,
            local_names=local_names,
        ) + self.team_problems(node)
        if problems:
            raise ReferenceProblems(problems)
