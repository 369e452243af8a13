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
The daemon decides tens of rules per event this way, so the function is a tree of ``if``
tests, each path returning its decision as a constant (:func:`decision_tree`); a condition with
too many ways to come out for such a tree adds up its decision as it goes instead.

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
from rulekit.rules.spec import AnyOf, Condition, Leaf, NotOf

Decider = Callable[[dict[str, Any]], int]
"""``decide(values)``: the condition's result and the outcome of each condition as one number
(:func:`~rulekit.engine.explain.decision_code`); raises when the values do not decide (see the
module's description)."""


class Indexable(Protocol):
    """An indexable condition (:class:`rulekit.engine.discriminators.Discriminator`)."""

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
        source = decision_tree(self.condition, lambda leaf: codes[id(leaf)])
        if source is not None:
            tree: Decider = program.compile_definition(source, "decide")
            return tree
        decider: Decider = compile_explainer(
            self.condition,
            program,
            code_of=lambda leaf: codes[id(leaf)],
            arguments="v",
            coded=True,
        )
        return decider


MAX_TREE_LINES = 256
"""The largest decision tree generated (a condition's paths can grow with its size: an ``all``
of ``any`` conditions has a path per combination of their deciding branches)."""
MAX_TREE_NESTING = 48
"""The deepest nesting of ``if`` tests in a decision tree (Python's parser allows 100)."""


class _TooLarge(Exception):
    pass


def decision_tree(condition: Condition, code_of: Callable[[Leaf], str]) -> str | None:
    """Python source of ``decide(v)``: ``condition`` as nested ``if`` tests of each leaf's code
    (``code_of``), each path returning the decision it reached as a constant
    (:func:`~rulekit.engine.explain.decision_code`: the same number, the same tests run in the
    same order as the explainer's); None when the tree would be too large
    (:data:`MAX_TREE_LINES`, :data:`MAX_TREE_NESTING`) or a condition has no parts."""
    shifts = {id(leaf): 2 * n for n, leaf in enumerate(leaves(condition))}
    lines = ["def decide(v):"]
    Then = Callable[[int, bool, int], None]  # at a nesting level, the result and code so far

    def emit(part: Condition, level: int, code: int, then: Then) -> None:
        if len(lines) > MAX_TREE_LINES or level > MAX_TREE_NESTING:
            raise _TooLarge
        if isinstance(part, Leaf):
            shift = shifts[id(part)]
            lines.append(f"{'    ' * level}if {code_of(part)}:")
            then(level + 1, True, code | 1 << shift)
            then(level, False, code | 2 << shift)  # the test's block returned
        elif isinstance(part, NotOf):
            emit(part.child, level, code, lambda lv, r, c: then(lv, not r, c))
        else:
            children, decisive = part.children, isinstance(part, AnyOf)
            if not children:
                raise _TooLarge

            def after(index: int) -> Then:
                def go_on(lv: int, r: bool, c: int) -> None:
                    if r is decisive or index + 1 == len(children):
                        then(lv, r, c)  # the later parts are not evaluated: no bits
                    else:
                        emit(children[index + 1], lv, c, after(index + 1))

                return go_on

            emit(children[0], level, code, after(0))

    def done(level: int, result: bool, code: int) -> None:
        lines.append(f"{'    ' * level}return {code + code + result}")

    try:
        emit(condition, 1, 0, done)
    except _TooLarge:
        return None
    return "\n".join(lines) + "\n"


def decidable(
    condition: Condition | None,
    program: Program,
    find: Callable[[nodes.Node], Indexable | None],
) -> Decidable | None:
    """``condition`` as tests of indexable field values, or None when one of its conditions is
    not such a test (or the tree is too deep for generated code). ``find`` gives a node's
    indexable form (the index's :func:`~rulekit.engine.discriminators.find_discriminator`)."""
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
