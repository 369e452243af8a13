"""Parsing condition expressions (Jinja2 syntax) and checking what they refer to.

Parsing is on the load path of every rule, and Jinja2's own parser costs ~200 µs per
expression. Most conditions are plain Python-compatible expressions
(``client.country_code == 'DE'``, ``'refund' in message.text|lower``), so they are parsed with
CPython's ``ast`` (~10x faster) and converted to Jinja2 nodes; anything whose meaning could
differ between the two languages (Jinja2's ``~``, tests with bare arguments, a filter applied to
an arithmetic expression, ``-x**2``) falls back to Jinja2's parser. A field's membership in a
list of texts (``client.country in ['DE', 'AT', ...]``), where CPython's parser spends ~2 µs
per literal, is read by one regex. Either way the result is the same Jinja2 node tree, which
the code generator (:mod:`rulekit.expr.codegen`) and the reference checker below read.
"""

from __future__ import annotations

import ast
import functools
import keyword
import math
import re
from datetime import datetime
from typing import Any, TypeVar

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError
from jinja2.parser import Parser
from pydantic import BaseModel

from rulekit.errors import TemplateError, did_you_mean
from rulekit.event import Agent, Client, Conversation, Message, TriggerEvent
from rulekit.expr.budget import MAX_DIGITS
from rulekit.expr.nodewalk import (
    children,
    constant,
    constant_list,
    constant_values,
    make_const,
    walk,
)
from rulekit.expr.regex import check_patterns
from rulekit.expr.sandbox import MAX_EXPRESSION, Sandbox, literal_escapes
from rulekit.team import Team

MAX_NESTING = 100
"""How deep the parts of one expression may nest (``a + b + c`` nests two deep, ``x|f|g`` two):
deeper trees are refused when rules load, before code is generated from them, so a long chain
is a clear error at its rule's line, not a crash of the compiler."""

ROOT_TYPES: dict[str, Any] = {
    "channel": str,
    "event": str,
    "conversation": Conversation,
    "client": Client,
    "message": Message,
    "agent": Agent,
    "origin": str,
    "recovered": bool,
    "changed": dict,
    "now": datetime,
    "env": dict,
    "trigger": TriggerEvent,
    "team": Team,
}
"""The names conditions and templates may read, and their types."""

N = TypeVar("N", bound=nodes.Node)

CONSTANTS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}

_COMPARE_OPS = {
    ast.Eq: "eq",
    ast.NotEq: "ne",
    ast.Lt: "lt",
    ast.LtE: "lteq",
    ast.Gt: "gt",
    ast.GtE: "gteq",
    ast.In: "in",
    ast.NotIn: "notin",
}
_BIN_OPS = {
    ast.Add: nodes.Add,
    ast.Sub: nodes.Sub,
    ast.Mult: nodes.Mul,
    ast.Div: nodes.Div,
    ast.FloorDiv: nodes.FloorDiv,
    ast.Mod: nodes.Mod,
    ast.Pow: nodes.Pow,
}
_CONSTANT_TYPES = (str, int, float, bool, type(None))
# what may stand left of a filter's `|` without changing meaning between Python and Jinja2
_POSTFIX = (ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.Constant, ast.List, ast.Tuple)


class _NotFast(Exception):
    """The expression needs Jinja2's own parser."""


def parse_expression(source: str, environment: Sandbox) -> nodes.Expr:
    """Parse one condition expression into Jinja2 nodes; raise TemplateError on bad syntax."""
    if len(source) > MAX_EXPRESSION:
        raise TemplateError(f"the expression is over {MAX_EXPRESSION} characters")
    text = source.strip()
    if not text:
        raise TemplateError("the expression is empty")
    membership = _membership(text)  # the shape that lists hundreds of values
    if membership is not None:
        return check_nesting(membership)
    try:
        with literal_escapes():
            tree = ast.parse(text, mode="eval")
        return check_nesting(_convert(tree.body))
    except (SyntaxError, _NotFast, ValueError, RecursionError):
        pass
    try:
        with literal_escapes():
            parser = Parser(environment, source, state="variable")
            expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("unexpected text after the expression", 1)
        return check_nesting(expr)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error: {exc.message}") from None
    except RecursionError:
        raise TemplateError("the expression is nested too deeply") from None


# ``path in ['x', "y", ...]``: a field (through filters without arguments) in a list of plain
# text literals, written as Python reads it: no backslash, no line break outside the brackets.
# Possessive quantifiers: no backtracking, linear in the text (tests/test_linear_text.py).
_MEMBERSHIP = re.compile(
    r"""
    (?P<path>[A-Za-z_][A-Za-z0-9_]*+(?:\.[A-Za-z_][A-Za-z0-9_]*+)*+)
    (?P<filters>(?:[ \t]*+\|[ \t]*+[A-Za-z_][A-Za-z0-9_]*+)*+)
    [ \t]++(?P<op>(?:not[ \t]++)?in)[ \t]*+
    \[[ \t\n]*+
    (?P<items>(?:
        (?:'[^'\\\n\r\x00\ud800-\udfff]*+'|"[^"\\\n\r\x00\ud800-\udfff]*+")[ \t\n]*+
        (?:,[ \t\n]*+(?:'[^'\\\n\r\x00\ud800-\udfff]*+'|"[^"\\\n\r\x00\ud800-\udfff]*+")[ \t\n]*+)*+
        (?:,[ \t\n]*+)?
    )?)
    \]
    """,
    re.VERBOSE,
)
_QUOTED = re.compile(r"""'([^']*)'|"([^"]*)\"""")
_SINGLE_QUOTED = re.compile(r"'([^']*)'")
_DOUBLE_QUOTED = re.compile(r'"([^"]*)"')


def _membership(source: str) -> nodes.Expr | None:
    """The tree of ``source`` when it is a field's membership in a list of text literals
    (``client.country in ['DE', 'AT', ...]``), the shape that lists hundreds of values, made
    without CPython's parser (~2 µs per literal); None for any other expression. The tree is
    the one :func:`_convert` makes of CPython's (``tests/expr/test_membership.py``)."""
    found = _MEMBERSHIP.fullmatch(source)
    if found is None:
        return None
    parts = found["path"].split(".")
    filters = [name.strip(" \t") for name in found["filters"].split("|")[1:]]
    if parts[0] in CONSTANTS or any(keyword.iskeyword(name) for name in parts + filters):
        return None  # ``none.x`` reads a constant, ``x.if`` is not Python
    node: nodes.Expr = nodes.Name(parts[0], "load")
    for attr in parts[1:]:
        node = nodes.Getattr(node, attr, "load")
    for name in filters:
        node = nodes.Filter(node, name, [], [], None, None)
    items = found["items"]
    if '"' not in items:  # one kind of quote, as lists are mostly written: each match is a text
        values = _SINGLE_QUOTED.findall(items)
    elif "'" not in items:
        values = _DOUBLE_QUOTED.findall(items)
    else:
        values = [single or double for single, double in _QUOTED.findall(items)]
    op = "in" if found["op"] == "in" else "notin"
    return nodes.Compare(node, [nodes.Operand(op, constant_list(values))])


def check_nesting(tree: N) -> N:
    """``tree`` itself; :class:`TemplateError` when its expressions nest more than
    :data:`MAX_NESTING` deep (statements around them do not count: Jinja2 bounds those)."""
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, nodes.Expr):
            depth += 1
            if isinstance(node, nodes.List | nodes.Tuple) and node.items and constant(node):
                depth += 1  # the list's items, constants all
            if depth > MAX_NESTING:
                raise TemplateError(
                    f"the expression nests more than {MAX_NESTING} levels deep "
                    "(split it with {% set %} or into several conditions)"
                )
            if constant(node):
                _check_numbers(node)
                continue
        elif isinstance(node, nodes.Stmt):
            depth = 0
        stack.extend((child, depth) for child in children(node))
    return tree


_TOO_MANY_DIGITS = 10**MAX_DIGITS


def _check_numbers(node: nodes.Node) -> None:
    """:class:`TemplateError` for a number written too large: a float over 1.8e308 (``1e309``)
    would be infinity, which the generated code cannot even name (every evaluation failed with
    a ``NameError``); an integer of more than :data:`MAX_DIGITS` digits (``0xfff…``) is more
    than a template may compute, and past 4,300 the code cannot be written at all."""
    # ``node`` is a constant, or a list or tuple of constants (its values kept on it: a list
    # of hundreds of texts is read once, not walked node by node)
    values = constant_values(node)
    for value in (node.value,) if values is None else values:  # type: ignore[attr-defined]
        if type(value) is str:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise TemplateError("a number is too large (a float is at most about 1.8e308)")
        if isinstance(value, int) and abs(value) >= _TOO_MANY_DIGITS:
            raise TemplateError(f"a number is too large (at most {MAX_DIGITS} digits)")


def _convert(node: ast.expr) -> nodes.Expr:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool | int | float | str) or node.value is None:
            return make_const(node.value)
        raise _NotFast
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return nodes.Const(CONSTANTS[node.id])
        return nodes.Name(node.id, "load")
    if isinstance(node, ast.Attribute):
        return nodes.Getattr(_convert(node.value), node.attr, "load")
    if isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Slice):
            s = node.slice
            arg: nodes.Expr = nodes.Slice(*(_opt(part) for part in (s.lower, s.upper, s.step)))
        else:
            arg = _convert(node.slice)
        return nodes.Getitem(_convert(node.value), arg, "load")
    if isinstance(node, ast.BoolOp):
        kind = nodes.And if isinstance(node.op, ast.And) else nodes.Or
        result = _convert(node.values[0])
        for value in node.values[1:]:
            result = kind(result, _convert(value))
        return result
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return nodes.Not(_convert(node.operand))
        if isinstance(node.op, ast.USub | ast.UAdd):
            if isinstance(node.operand, ast.BinOp) and isinstance(node.operand.op, ast.Pow):
                raise _NotFast  # -x**2: Python and Jinja2 disagree
            sign = nodes.Neg if isinstance(node.op, ast.USub) else nodes.Pos
            return sign(_convert(node.operand))
        raise _NotFast
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitOr):
            return _filter(node)
        if type(node.op) not in _BIN_OPS:
            raise _NotFast
        if isinstance(node.op, ast.Pow) and _is_pow(node.right):
            raise _NotFast  # a ** b ** c: right-associative in Python, left in Jinja2
        return _BIN_OPS[type(node.op)](_convert(node.left), _convert(node.right))
    if isinstance(node, ast.Compare):
        if any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops):
            return _test(node)
        ops = [
            nodes.Operand(_COMPARE_OPS[type(op)], _convert(c))
            for op, c in zip(node.ops, node.comparators, strict=True)
        ]
        return nodes.Compare(_convert(node.left), ops)
    if isinstance(node, ast.Call):
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            raise _NotFast
        return nodes.Call(
            _convert(node.func),
            [_convert(a) for a in node.args],
            [nodes.Keyword(k.arg, _convert(k.value)) for k in node.keywords],
            None,
            None,
        )
    if isinstance(node, ast.IfExp):
        return nodes.CondExpr(_convert(node.test), _convert(node.body), _convert(node.orelse))
    if isinstance(node, ast.List):
        return nodes.List(_items(node.elts))
    if isinstance(node, ast.Tuple):
        return nodes.Tuple(_items(node.elts), "load")
    if isinstance(node, ast.Dict):
        pairs = []
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**other}
                raise _NotFast
            pairs.append(nodes.Pair(_convert(key), _convert(value)))
        return nodes.Dict(pairs)
    raise _NotFast


def _items(elements: list[ast.expr]) -> list[nodes.Expr]:
    # rules list hundreds of values: constants are made directly
    if all(type(e) is ast.Constant and type(e.value) in _CONSTANT_TYPES for e in elements):
        return [make_const(e.value) for e in elements]  # type: ignore[attr-defined]
    return [_convert(e) for e in elements]


def _opt(node: ast.expr | None) -> nodes.Expr | None:
    return None if node is None else _convert(node)


def _call_parts(node: ast.expr) -> tuple[str, list[nodes.Expr], list[nodes.Keyword]]:
    """``name`` or ``name(args)`` as used after ``|`` and ``is``."""
    if isinstance(node, ast.Name):
        return node.id, [], []
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and not any(isinstance(a, ast.Starred) for a in node.args)
        and all(k.arg is not None for k in node.keywords)
    ):
        args = [_convert(a) for a in node.args]
        kwargs = [
            nodes.Keyword(k.arg, _convert(k.value)) for k in node.keywords if k.arg is not None
        ]
        return node.func.id, args, kwargs
    raise _NotFast


def _is_pow(node: ast.expr) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)


def _binds_like_jinja(left: ast.expr) -> bool:
    """Whether ``left`` is what Jinja2 applies a following ``|filter`` or ``is test`` to:
    a postfix expression or a filter chain. Jinja2 binds both tighter than any operator, and the
    ``ast`` tree cannot tell ``(a + b) is odd`` from ``a + b is odd``."""
    return isinstance(left, _POSTFIX) or (
        isinstance(left, ast.BinOp) and isinstance(left.op, ast.BitOr)
    )


def _filter(node: ast.BinOp) -> nodes.Expr:
    left = node.left
    if not _binds_like_jinja(left):
        raise _NotFast  # `a + b|f` filters only b in Jinja2
    name, args, kwargs = _call_parts(node.right)
    return nodes.Filter(_convert(left), name, args, kwargs, None, None)


def _test(node: ast.Compare) -> nodes.Expr:
    if len(node.ops) != 1 or not _binds_like_jinja(node.left):
        raise _NotFast  # `a + b is odd` tests only b in Jinja2
    name, args, kwargs = _call_parts(node.comparators[0])
    if name in ("none", "None", "true", "True", "false", "False"):
        name = name.lower()
    test = nodes.Test(_convert(node.left), name, args, kwargs, None, None)
    return nodes.Not(test) if isinstance(node.ops[0], ast.IsNot) else test


# -- reference checking ------------------------------------------------------------------------


@functools.cache
def field_type(model: Any, name: str) -> Any:
    """The type of ``model.name`` as far as rules care: a model class, ``dict``, or a scalar."""
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        if candidate is dict or getattr(candidate, "__origin__", None) is dict:
            return dict
    return annotation


def reads_name(expr: nodes.Node, name: str) -> bool:
    """Whether ``expr`` reads the context name ``name`` (``team``)."""
    found = [expr] if isinstance(expr, nodes.Name) else expr.find_all(nodes.Name)
    return any(node.name == name and node.ctx == "load" for node in found)


def check_references(
    expr: nodes.Node,
    known_names: set[str],
    *,
    filters: dict[str, Any],
    tests: dict[str, Any],
    local_names: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[str]:
    """Problems with what ``expr`` refers to: unknown names, fields, filters and tests,
    underscore attributes, and regex patterns that are not literal or that RE2 cannot run.
    Each problem is one line with a "did you mean" when one is close."""
    problems: list[str] = []
    for node in walk(expr):
        if isinstance(node, nodes.Const):
            continue
        if isinstance(node, nodes.Name):
            if node.ctx == "load" and node.name not in known_names | local_names:
                if node.name == "raw":
                    problems.append("`raw` is the provider's payload, for auditing, not for rules")
                else:
                    hint = did_you_mean(node.name, sorted(known_names))
                    problems.append(f"unknown name {node.name!r}{hint}")
        elif isinstance(node, nodes.Getattr):
            if node.attr.startswith("_"):
                problems.append(f"attribute {node.attr!r} is not accessible (sandbox)")
                continue
            path = _model_path(node)
            if path is None or path[0] in local_names:
                continue
            problem = _check_path(path)
            if problem:
                problems.append(problem)
        elif isinstance(node, nodes.Filter) and node.name not in filters:
            problems.append(f"unknown filter {node.name!r}{did_you_mean(node.name, filters)}")
        elif isinstance(node, nodes.Test) and node.name not in tests:
            problems.append(f"unknown test {node.name!r}{did_you_mean(node.name, tests)}")
    problems.extend(check_patterns(expr))
    return list(dict.fromkeys(problems))


def _model_path(node: nodes.Getattr) -> list[str] | None:
    """``client.custom.plan`` → ``["client", "custom", "plan"]``; None when not rooted at a name."""
    parts = [node.attr]
    current: nodes.Node = node.node
    while isinstance(current, nodes.Getattr):
        parts.append(current.attr)
        current = current.node
    if not isinstance(current, nodes.Name):
        return None
    parts.append(current.name)
    return parts[::-1]


def _check_path(path: list[str]) -> str | None:
    root = ROOT_TYPES.get(path[0])
    current: Any = root
    walked = path[0]
    for attr in path[1:]:
        if current is Team:
            if attr not in Team.READABLE:
                return f"team has no field {attr!r}{did_you_mean(attr, sorted(Team.READABLE))}"
            return None
        if isinstance(current, type) and issubclass(current, BaseModel):
            if attr not in current.model_fields:
                hint = did_you_mean(attr, list(current.model_fields))
                return f"{walked} has no field {attr!r}{hint}"
            current = field_type(current, attr)
            walked += f".{attr}"
        else:
            return None  # dicts, strings, dates: checked when the rule runs
    return None
