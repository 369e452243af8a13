"""Indexable conditions: which must-hold condition of a rule the rule index can file it under.

A *discriminator* is one condition that must hold for the rule to match and that has an
indexable shape — ``path == 'x'``, ``path in ['x', 'y']``, ``path.startswith('x')``,
``path.endswith('x')``, ``'x' in path`` (``path`` being an event field, optionally through
``lower``/``upper``/``trim``); an ``any`` whose every branch has one is an :class:`AnyKey`.
:func:`discriminators_of` finds a rule's, and :func:`choose_by_selectivity` picks, for each
rule of a bucket, the one that narrows most (:mod:`.index` files the rule under it).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from rulekit.expr.codegen import Program
from rulekit.expr.nodewalk import constant_values
from rulekit.rules.spec import Either, Rule

_KEY_FILTERS = {"lower", "upper", "trim"}


@dataclass(slots=True)
class Discriminator:
    kind: str  # "eq", "prefix", "suffix", "contains"
    key_code: str
    values: tuple[Any, ...]
    key_source: str = "the field"
    """The field as the rule wrote it (e.g. ``client.email|lower``), for explanations."""

    def why_not(self, value: Any) -> str:
        """Why a rule excluded by this discriminator is not a candidate, the field's value
        being ``value``."""
        if self.kind != "eq" and not isinstance(value, str):
            return f"{self.key_source} is {_shown(value)}, not text"
        shown = ", ".join(repr(v) for v in self.values)
        several = len(self.values) > 1
        if self.kind == "eq":
            return f"{self.key_source} is not " + (f"one of {shown}" if several else shown)
        if self.kind == "prefix":
            return f"{self.key_source} does not start with " + (
                f"any of {shown}" if several else shown
            )
        if self.kind == "suffix":
            return f"{self.key_source} does not end with " + (
                f"any of {shown}" if several else shown
            )
        return f"{self.key_source} does not contain {shown}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


@dataclass
class AnyKey:
    """One indexable condition per branch of an :class:`Either`: the rule is a candidate when
    any of them holds."""

    parts: list[Discriminator]


def key_source(node: nodes.Node) -> str:
    """An indexable key as source text: ``client.email``, ``message.text|lower``."""
    filters = []
    while isinstance(node, nodes.Filter):
        filters.append(node.name)
        node = node.node  # type: ignore[assignment]
    names = []
    while isinstance(node, nodes.Getattr):
        names.append(node.attr)
        node = node.node
    if isinstance(node, nodes.Name):
        names.append(node.name)
    # interned: a large rule set's discriminators read the same few fields
    return sys.intern(".".join(reversed(names)) + "".join(f"|{f}" for f in reversed(filters)))


def _is_key(node: nodes.Node | None) -> bool:
    """An event field path, optionally through argument-less case/trim filters."""
    while isinstance(node, nodes.Filter):
        if node.name not in _KEY_FILTERS or node.args or node.kwargs:
            return False
        node = node.node
    if not isinstance(node, nodes.Getattr):
        return False
    while isinstance(node, nodes.Getattr):
        node = node.node
    return isinstance(node, nodes.Name)


def _constants(node: nodes.Node) -> tuple[Any, ...] | None:
    if isinstance(node, nodes.Const):
        return (node.value,)
    return constant_values(node)


def find_discriminator(conjunct: nodes.Node, program: Program) -> Discriminator | None:
    """The indexable form of one must-hold condition, or None."""
    found = _find_discriminator(conjunct, program)
    if found is not None:  # a large rule set's discriminators read the same few fields
        found.key_code = sys.intern(found.key_code)
    return found


def _find_discriminator(conjunct: nodes.Node, program: Program) -> Discriminator | None:
    if isinstance(conjunct, nodes.Compare) and len(conjunct.ops) == 1:
        left, op, right = conjunct.expr, conjunct.ops[0].op, conjunct.ops[0].expr
        if op == "eq":
            if _is_key(right) and isinstance(left, nodes.Const):
                left, right = right, left
            if _is_key(left) and isinstance(right, nodes.Const) and _hashable(right.value):
                return Discriminator(
                    "eq", program.expression_code(left), (right.value,), key_source(left)
                )
        if op == "in":
            values = _constants(right)
            if _is_key(left) and values and _all_hashable(values):
                return Discriminator("eq", program.expression_code(left), values, key_source(left))
            if isinstance(left, nodes.Const) and isinstance(left.value, str) and _is_key(right):
                if left.value:
                    return Discriminator(
                        "contains", program.expression_code(right), (left.value,), key_source(right)
                    )
    if (
        isinstance(conjunct, nodes.Call)
        and isinstance(conjunct.node, nodes.Getattr)
        and conjunct.node.attr in ("startswith", "endswith")
        and _is_key(conjunct.node.node)
        and len(conjunct.args) == 1
        and not conjunct.kwargs
    ):
        values = _constants(conjunct.args[0])
        if values and all(isinstance(v, str) and v for v in values):
            kind = "prefix" if conjunct.node.attr == "startswith" else "suffix"
            key = conjunct.node.node
            return Discriminator(kind, program.expression_code(key), values, key_source(key))
    return None


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


_HASHABLE_TYPES = frozenset({str, int, float, bool, type(None)})


def _all_hashable(values: tuple[Any, ...]) -> bool:
    # lists of hundreds of values are of one or two plain types: their types are checked once
    return set(map(type, values)) <= _HASHABLE_TYPES or all(map(_hashable, values))


_PREFERENCE = {"eq": 0, "prefix": 1, "suffix": 1, "contains": 2}


Option = Discriminator | AnyKey


def discriminators_of(
    rule: Rule,
    program: Program,
    discriminator: Callable[[nodes.Node], Discriminator | None] | None = None,
) -> list[Option]:
    """Every indexable must-hold condition of a rule (each found by ``discriminator``,
    :func:`find_discriminator` by default)."""
    find = discriminator or (lambda node: find_discriminator(node, program))
    return _options(rule.conjuncts, program, find)


def _options(
    conjuncts: Sequence[Any],
    program: Program,
    discriminator: Callable[[nodes.Node], Discriminator | None],
) -> list[Option]:
    found: list[Option] = []
    for conjunct in conjuncts:
        if isinstance(conjunct, Either):
            parts = []
            for branch in conjunct.branches:
                options = _options(branch, program, discriminator)
                single = [o for o in options if isinstance(o, Discriminator)]
                if single:
                    parts.append(min(single, key=lambda d: _PREFERENCE[d.kind]))
                elif options:  # a nested disjunction: all of its parts
                    parts.extend(p for o in options if isinstance(o, AnyKey) for p in o.parts)
                else:
                    break  # a branch that can hold for any event: no index
            else:
                found.append(AnyKey(parts))
        elif d := discriminator(conjunct):
            found.append(d)
    return found


def option_parts(option: Option) -> list[Discriminator]:
    """The tests an option stands for: itself, or each branch's of an :class:`AnyKey`."""
    return option.parts if isinstance(option, AnyKey) else [option]


def choose_by_selectivity(options: dict[str, Sequence[Option]]) -> dict[str, Option]:
    """For each rule of one bucket (name -> its indexable conditions), the condition that
    narrows most, estimated from the rules themselves.

    A key (an event field, read through its filters) that the bucket's rules test against many
    distinct values splits events finely: an event has one value, so a rule indexed under one of
    ``n`` values of a key with ``d`` distinct values is a candidate for about ``n / d`` of the
    events. A country tested by every rule against three values narrows little; an email suffix
    with a thousand distinct domains narrows much. Ties go to equality, then prefixes and
    suffixes, then substrings (the cheapest lookups first). A disjunction indexed under one
    test per branch narrows as little as its branches together.
    """
    distinct: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for found in options.values():
        for option in found:
            for d in option_parts(option):
                distinct[(d.kind, d.key_code)].update(d.values)

    def share(d: Discriminator) -> float:
        return len(d.values) / max(1, len(distinct[(d.kind, d.key_code)]))

    def cost(option: Option) -> tuple[float, int]:
        parts = option_parts(option)
        return sum(share(d) for d in parts), max(_PREFERENCE[d.kind] for d in parts) + len(
            parts
        ) - 1

    chosen = {}
    for name, found in options.items():
        if found:
            chosen[name] = min(found, key=cost)
    return chosen
