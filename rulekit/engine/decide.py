"""Deciding a rule from the field values the index has read.

To find the candidates of an event, the index reads each field its rules discriminate on once
(``client.country``, ``message.text|lower``). A rule whose every condition is an indexable test
of such a field (an equality, a membership, a prefix, suffix or substring test), combined by
``all``, ``any`` and ``not``, need not read the event again: each of its conditions is the same
Python operation applied to the value already read. Such a rule gets a *decider*, one generated
function ``decide(v)`` (``v``: the values read, by field) that explains the rule like its
explainer (:mod:`.explain`) — one outcome per condition, the same short-circuits — without
reading a field, calling a filter or lowering a text again; it returns the decision as one
number (:func:`~rulekit.engine.explain.decision_code`), the key of the decision's shared trace.

A decider is exact or silent: when a field could not be read (it is then missing from ``v``) or
a test raises (a substring test on ``None``, a prefix test on a number), it raises too, and the
engine evaluates the rule in full, which says what went wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from jinja2 import nodes

from rulekit.engine.explain import MAX_DEPTH, compile_explainer, depth, leaves
from rulekit.expr.codegen import Program
from rulekit.rules.spec import Condition

Decider = Callable[[dict[str, Any]], int]
"""``decide(values)``: the condition's result and the outcome of each condition as one number
(:func:`~rulekit.engine.explain.decision_code`); raises when the values do not decide (see the
module's description)."""


class Indexable(Protocol):
    """An indexable condition (:class:`rulekit.engine.index.Discriminator`)."""

    kind: str
    key_code: str
    values: tuple[Any, ...]


class Decidable:
    """A rule's condition as tests of field values: each leaf's code and the fields read."""

    __slots__ = ("codes", "condition", "keys")

    def __init__(self, condition: Condition, codes: tuple[str, ...], keys: frozenset[str]) -> None:
        self.condition = condition
        self.codes = codes
        """Each leaf's test on ``v[<field code>]``, in the order of :func:`.leaves` (a tuple,
        not a dict by leaf: one is kept for every rule of a large set until it is decided)."""
        self.keys = keys
        """The fields (as their code) the tests read."""

    def compile(self, program: Program) -> Decider:
        """The decider (compiled now: call once per rule)."""
        program.namespace.setdefault("_decided_text", _text)
        codes = dict(zip(map(id, leaves(self.condition)), self.codes, strict=True))
        decider: Decider = compile_explainer(
            self.condition,
            program,
            code_of=lambda leaf: codes[id(leaf)],
            arguments="v",
            coded=True,
        )
        return decider


def decidable(
    condition: Condition | None,
    program: Program,
    find: Callable[[nodes.Node], Indexable | None],
) -> Decidable | None:
    """``condition`` as tests of indexable field values, or None when one of its conditions is
    not such a test (or the tree is too deep for generated code). ``find`` gives a node's
    indexable form (the index's :func:`~rulekit.engine.index.find_discriminator`)."""
    if condition is None or depth(condition) > MAX_DEPTH:
        return None
    codes: list[str] = []
    keys: set[str] = set()
    for leaf in leaves(condition):
        found = _leaf_test(leaf.node, find, program)
        if found is None:
            return None
        code, key = found
        codes.append(code)
        keys.add(key)
    return Decidable(condition, tuple(codes), frozenset(keys))


def _leaf_test(
    node: Any, find: Callable[[nodes.Node], Indexable | None], program: Program
) -> tuple[str, str] | None:
    """One condition's test on its field's value, and the field's code."""
    if node is None:
        return None
    d = find(node)
    if d is None:
        return None
    value = f"v[{d.key_code!r}]"
    if d.kind == "eq":
        if not _all_literal(d.values):
            return None
        # the condition's own operation: ``==`` or ``in`` a list (a tuple tests the same)
        if node.ops[0].op == "eq":
            return f"({value} == {d.values[0]!r})", d.key_code
        return f"({value} in {d.values!r})", d.key_code
    if d.kind == "contains":
        return f"({d.values[0]!r} in {value})", d.key_code
    # startswith/endswith with the argument as written (a list there fails as it would)
    method = "startswith" if d.kind == "prefix" else "endswith"
    argument = program.expression_code(node.args[0])
    return f"_decided_text({value}).{method}({argument})", d.key_code


_LITERAL_TYPES = frozenset({str, int, bool, type(None)})


def _all_literal(values: tuple[Any, ...]) -> bool:
    # lists of hundreds of values are of one or two plain types: their types are checked once
    return set(map(type, values)) <= _LITERAL_TYPES or all(map(_literal, values))


def _literal(value: Any) -> bool:
    """A constant whose ``repr`` is Python source for it."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool) or value is None


def _text(value: Any) -> str:
    """``value`` if it is text; else raise (the rule's own ``startswith`` call says why)."""
    if type(value) is not str:
        raise TypeError("not text")
    return value
