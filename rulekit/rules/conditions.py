"""Compiling conditions (``if:``, ``unless:``): from YAML to a tree of checked expressions,
the code of its matcher, and the conjuncts the rule index reads."""

from __future__ import annotations

from typing import Any

from rulekit.errors import RuleError, TemplateError, did_you_mean
from rulekit.expr.codegen import CACHED_CONDITIONS
from rulekit.expr.parse import check_references
from rulekit.expr.timefunctions import CALENDAR_FUNCTIONS
from rulekit.rules.compilation import Compilation, Locator
from rulekit.rules.spec import AllOf, AnyOf, Condition, Either, Leaf, NotOf, Rule

CONDITION_KEYS = ("all", "any", "not")


class ConditionCompiler:
    """Compiles conditions into a :class:`Compilation`'s program."""

    def __init__(self, compilation: Compilation) -> None:
        self.compilation = compilation
        self._compile_function = compilation.program.compile_function  # one, for every leaf
        self._problems: dict[str, list[str]] = {}
        """Each expression's reference problems: rule sets repeat the same expressions."""

    def compile(
        self, value: Any, at: Locator, path: tuple[Any, ...], errors: list[RuleError]
    ) -> Condition | None:
        """The condition written as ``value`` at ``path``; None, with the problems added to
        ``errors``, when it is not valid."""
        if isinstance(value, list):
            if not value:
                errors.append(at.error(path, "an empty condition list; remove `if` or add one"))
                return None
            children = [self.compile(v, at, (*path, i), errors) for i, v in enumerate(value)]
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
                child = self.compile(inner, at, sub, errors)
                return None if child is None else NotOf(child)
            if not isinstance(inner, list) or not inner:
                errors.append(at.error(sub, f"`{key}` needs a non-empty list of conditions"))
                return None
            children = [self.compile(v, at, (*sub, i), errors) for i, v in enumerate(inner)]
            if any(c is None for c in children):
                return None
            return (AllOf if key == "all" else AnyOf)(children)  # type: ignore[arg-type]
        if isinstance(value, str):
            return self._leaf(value, at, path, errors)
        kind = "a boolean" if isinstance(value, bool) else type(value).__name__
        errors.append(at.error(path, f"a condition must be an expression string, not {kind}"))
        return None

    def _leaf(
        self, value: str, at: Locator, path: tuple[Any, ...], errors: list[RuleError]
    ) -> Leaf | None:
        compilation = self.compilation
        try:
            expr, code = compilation.program.parse_condition(value)
        except TemplateError as exc:
            # an unknown name stops code generation; the reference check says it better
            for problem in compilation.reference_problems(value) or [str(exc)]:
                errors.append(at.error(path, f"{problem} in {value!r}"))
            return None
        problems = self._problems.get(value)
        if problems is None:
            environment = compilation.environment
            if len(self._problems) >= CACHED_CONDITIONS:  # the oldest goes, as in the program
                del self._problems[next(iter(self._problems))]
            problems = self._problems[value] = check_references(
                expr,
                compilation.known_names,
                filters=environment.filters,
                tests=environment.tests,
            ) + compilation.team_problems(expr, value)
        compilation.note_team(at, path)
        if any(name in value for name in CALENDAR_FUNCTIONS):  # else no tree to walk
            compilation.lint_calendars(expr, at, path, value)
        for problem in problems:
            errors.append(at.error(path, f"{problem} in {value!r}"))
        if problems:
            return None
        return Leaf(value, code, at.location(path), self._compile_function, expr)


def matcher_code(condition: Condition) -> str:
    """The Python expression that is true when ``condition`` holds, from its leaves' code
    (the engine compiles a rule's on first use: most rules of a large set are decided from
    the values the index read, or explained, and never need it)."""
    if isinstance(condition, Leaf):
        return f"({condition.code})"
    if isinstance(condition, NotOf):
        return f"(not {matcher_code(condition.child)})"
    joiner = " and " if isinstance(condition, AllOf) else " or "
    return "(" + joiner.join(matcher_code(c) for c in condition.children) + ")"


def forget_trees(rule: Rule) -> None:
    """Drop ``rule``'s expression trees (its conjuncts, each condition's node): they serve
    loading and indexing only."""
    rule.conjuncts = ()
    unless = rule.timing.unless if rule.timing is not None else None
    for condition in (rule.condition, unless):
        stack: list[Any] = [condition] if condition is not None else []
        while stack:
            current = stack.pop()
            if isinstance(current, Leaf):
                current.node = None
            elif isinstance(current, NotOf):
                stack.append(current.child)
            else:
                stack.extend(current.children)


def conjuncts(condition: Condition) -> list[Any]:
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
            out.append(Either([conjuncts(child) for child in current.children]))
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
