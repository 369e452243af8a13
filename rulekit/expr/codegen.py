"""Compiling conditions and simple templates to Python code, once, at load time.

Jinja2's ``compile_expression`` costs ~9 µs per call; a generated Python function reading event
fields directly costs a fraction of that. The generator walks the Jinja2 node tree of an
expression (from :mod:`rulekit.expr.parse`) and writes one Python expression; all the functions
of a rule set are written into one module source and compiled with a single ``compile()``.

Safety: generated code can only reach what the node tree names. Attribute reads go through
:func:`attr` (event fields, whitelisted string/dict/date methods, nothing with an underscore)
unless the attribute is a statically known event field; arithmetic that can inflate memory goes
through the limited operations of :mod:`rulekit.expr.sandbox`; filters and tests are the sandbox's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import nodes, pass_context, pass_environment, pass_eval_context
from jinja2.runtime import new_context
from markupsafe import Markup
from pydantic import BaseModel

from rulekit.errors import TemplateError
from rulekit.event import readable_changes
from rulekit.expr.budget import MAX_OUTPUT, MAX_TEMPLATE, current, produced, to_text
from rulekit.expr.nodewalk import constant_values
from rulekit.expr.parse import CONSTANTS, ROOT_TYPES, field_type, parse_expression
from rulekit.expr.policy import (
    BINARY_OPERATORS,
    SAFE_DICT_METHODS,
    allowed_attribute,
    call_within_budget,
)
from rulekit.expr.policy import concat as safe_concat
from rulekit.expr.sandbox import Sandbox, check_output
from rulekit.expr.timefunctions import is_reading_now


def _marker(decorator: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    return getattr(decorator(lambda: None), "jinja_pass_arg", None)


# what Jinja2's public decorators mark a filter with (``pass_context`` & co)
_PASS_CONTEXT = _marker(pass_context)
_PASS_EVAL_CONTEXT = _marker(pass_eval_context)
_PASS_ENVIRONMENT = _marker(pass_environment)

ROOT_CODE = {
    "channel": "e.channel",
    "event": "e.event",
    "conversation": "e.conversation",
    "client": "e.client",
    "message": "e.message",
    "agent": "e.agent",
    "origin": "e.origin",
    "recovered": "e.recovered",
    "changed": "_changes(e.changed)",
    "now": "now",
    "env": "env",
    "trigger": "e.trigger",
    "team": "e.team",
}


def attr(obj: Any, name: str) -> Any:
    """Jinja2-style ``obj.name`` limited to data (the sandbox's policy,
    :func:`~rulekit.expr.policy.allowed_attribute`): event fields, dict keys (``None`` when
    missing), and a short list of side-effect-free methods. A dict's key named like one of its
    methods (a field ``items``) is the key's value: ``conversation.fields.items`` reads the
    field; :func:`method` gives the method to a call."""
    if isinstance(obj, dict) and (name not in SAFE_DICT_METHODS or name in obj):
        return obj.get(name)
    return method(obj, name)


def method(obj: Any, name: str) -> Any:
    """``obj.name`` as the target of a call (``conversation.fields.items()``): a dict's own
    method even when it has a key of that name; otherwise as :func:`attr`."""
    if isinstance(obj, dict) and name not in SAFE_DICT_METHODS:
        return obj.get(name)
    if allowed_attribute(obj, name):
        return getattr(obj, name)
    if obj is None:
        raise TemplateError(f"cannot read {name!r} of None (the value is missing)")
    raise TemplateError(f"{type(obj).__name__} value has no attribute {name!r}")


def item(obj: Any, key: Any) -> Any:
    """Jinja2-style ``obj[key]``: ``None`` for a missing dict key."""
    if isinstance(obj, dict):
        return obj.get(key)
    if isinstance(key, str):
        return attr(obj, key)
    if obj is None:
        raise TemplateError(f"cannot index None with {key!r} (the value is missing)")
    return obj[key]


def concat(*parts: Any) -> str:
    """Jinja2's ``~``, with ``None`` as an empty string."""
    return safe_concat(parts)


def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A call in a condition (a method, a global): a step of the budget, its result counted."""
    current().step()
    return produced(call_within_budget(function, args, kwargs), function, *args)


_OPERATOR_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod"}
_OPERATOR_NAMES["**"] = "pow"
_BINARY: dict[type[nodes.Node], str] = {
    kind: f"_op_{_OPERATOR_NAMES[kind.operator]}({{0}}, {{1}})"
    for kind in (nodes.Add, nodes.Sub, nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow)
}
_COMPARE = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "lteq": "<=",
    "gt": ">",
    "gteq": ">=",
    "in": "in",
    "notin": "not in",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUILD_CHUNK = 256
CACHED_CONDITIONS = 1024
"""Distinct conditions :meth:`Program.parse_condition` keeps parsed."""
"""Generated functions compiled together by :meth:`Program.build`."""


class Program:
    """Collects generated functions and compiles them together.

    ``add_*`` methods return a slot whose ``.function`` is set by :meth:`build`.
    """

    def __init__(self, environment: Sandbox, global_names: dict[str, Any]) -> None:
        self.environment = environment
        self.lines: list[str] = []
        self.slots: list[tuple[str, Slot]] = []
        self.namespace: dict[str, Any] = {
            "_attr": attr,
            "_changes": readable_changes,
            "_method": method,
            "_item": item,
            "_concat": concat,
            "_call": call,
            "_Markup": Markup,
            "_MAX_OUTPUT": MAX_OUTPUT,
            "_TemplateError": TemplateError,
            "_out": output,
            "_checked": check_output,
        }
        for operator, function in BINARY_OPERATORS.items():
            self.namespace[f"_op_{_OPERATOR_NAMES[operator]}"] = function
        self._context = new_context(environment, "<rule>", {}, {}, True, None, None)
        self._bound: dict[tuple[str, str], str] = {}
        self._globals = global_names
        self._escapers: dict[int, str] = {}
        self._conditions: dict[str, tuple[nodes.Expr, str]] = {}
        self._constants: dict[tuple[Any, ...], str] = {}

    # -- expressions ---------------------------------------------------------------------------
    def expression_code(self, expr: nodes.Node) -> str:
        """Python source for a Jinja2 expression node (names ``e``, ``now``, ``env`` in scope)."""
        return _Gen(self).code(expr)

    def add_function(self, body: str) -> Slot:
        """Add ``lambda e, now, env: <body>``; return its slot."""
        slot = Slot()
        name = f"_fn{len(self.slots)}"
        self.lines.append(f"def {name}(e, now, env):\n    return {body}\n")
        self.slots.append((name, slot))
        return slot

    def parse_condition(self, source: str) -> tuple[nodes.Expr, str]:
        """Parse one condition; returns its node tree and Python code.

        Rule sets repeat conditions (``message.author == 'client'``): the last
        :data:`CACHED_CONDITIONS` distinct sources are parsed and generated once (not all of
        them: a large set's trees would stay until the end of its load).
        """
        conditions = self._conditions
        found = conditions.get(source)
        if found is None:
            expr = parse_expression(source, self.environment)
            if len(conditions) >= CACHED_CONDITIONS:
                del conditions[next(iter(conditions))]  # the oldest
            found = conditions[source] = (expr, self.expression_code(expr))
        return found

    def add_condition(self, source: str) -> tuple[nodes.Expr, str, Slot]:
        """Parse and add one condition; returns its node tree, Python code and slot."""
        expr, code = self.parse_condition(source)
        return expr, code, self.add_function(code)

    def compile_function(self, body: str) -> Callable[..., Any]:
        """Compile ``lambda e, now, env: <body>`` on its own, in this program's namespace
        (for code needed rarely, e.g. conditions evaluated one by one only to explain)."""
        code = compile(f"lambda e, now, env: {body}", "<rulekit condition>", "eval")
        function: Callable[..., Any] = eval(code, self.namespace)  # from checked node trees
        return function

    def compile_definition(self, source: str, name: str) -> Any:
        """Compile ``source`` (Python statements defining ``name``, generated from checked node
        trees) in this program's namespace; return what it defines as ``name``."""
        defined: dict[str, Any] = {}
        exec(compile(source, "<rulekit condition>", "exec"), self.namespace, defined)
        return defined[name]

    def release_sources(self) -> None:
        """Forget the parsed expressions kept to share work while loading (memory)."""
        self._conditions.clear()

    def bind(self, kind: str, name: str, value: Any) -> str:
        """A namespace name for a filter, test or global."""
        key = (kind, name)
        if key not in self._bound:
            safe = name if _IDENT.match(name) else f"x{len(self._bound)}"
            ident = f"_{kind}_{safe}_{len(self._bound)}"
            self.namespace[ident] = value
            self._bound[key] = ident
        return self._bound[key]

    def constant(self, values: tuple[Any, ...]) -> str:
        """A namespace name for a tuple of constants (equal tuples share one)."""
        key = (values, tuple(map(type, values)))
        name = self._constants.get(key)
        if name is None:
            name = self._constants[key] = f"_k{len(self._constants)}"
            self.namespace[name] = values
        return name

    def escaper_name(self, escaper: Callable[[Any], str] | None) -> str:
        if escaper is None:
            return "None"
        key = id(escaper)
        if key not in self._escapers:
            name = f"_esc{len(self._escapers)}"
            self.namespace[name] = escaper
            self._escapers[key] = name
        return self._escapers[key]

    def build(self) -> None:
        """Compile everything added so far into functions."""
        if not self.lines:
            return
        # a few hundred functions per module: the compiler's syntax tree of one module holding
        # all of them was the peak of loading (~80 MB more at 10,000 rules)
        for start in range(0, len(self.lines), BUILD_CHUNK):
            source = "\n".join(self.lines[start : start + BUILD_CHUNK])
            exec(compile(source, "<rulekit rules>", "exec"), self.namespace)
        for name, slot in self.slots:
            slot.function = self.namespace[name]
        self.lines.clear()
        self.slots.clear()

    # filters and tests as callables of one value plus arguments
    def filter_callable(self, name: str) -> Any:
        function = self.environment.filters.get(name)
        if function is None:
            raise TemplateError(f"unknown filter {name!r}")
        return self._with_pass_arg(function)

    def test_callable(self, name: str) -> Any:
        function = self.environment.tests.get(name)
        if function is None:
            raise TemplateError(f"unknown test {name!r}")
        return self._with_pass_arg(function)

    def _with_pass_arg(self, function: Any) -> Any:
        pass_arg = getattr(function, "jinja_pass_arg", None)
        if pass_arg is None:
            return function
        if pass_arg is _PASS_ENVIRONMENT:
            return lambda *a, **k: function(self.environment, *a, **k)
        if pass_arg is _PASS_EVAL_CONTEXT:
            return lambda *a, **k: function(self._context.eval_ctx, *a, **k)
        if pass_arg is _PASS_CONTEXT:
            return lambda *a, **k: function(self._context, *a, **k)
        return function


class Slot:
    """Where a compiled function lands after :meth:`Program.build`."""

    __slots__ = ("function",)

    def __init__(self) -> None:
        self.function: Callable[..., Any] | None = None


class _Gen:
    """One expression's code generation; tracks static types to read event fields directly."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def code(self, node: nodes.Node) -> str:
        return self._code(node)[0]

    def _code(self, node: nodes.Node) -> tuple[str, Any]:
        p = self.program
        if isinstance(node, nodes.Const):
            return repr(node.value), type(node.value)
        if isinstance(node, nodes.Name):
            if node.name in ROOT_CODE:
                return ROOT_CODE[node.name], ROOT_TYPES[node.name]
            if node.name in CONSTANTS:
                return repr(CONSTANTS[node.name]), None
            if node.name in p._globals:
                return p.bind("g", node.name, p._globals[node.name]), None
            raise TemplateError(f"unknown name {node.name!r}")
        if isinstance(node, nodes.Getattr):
            return self._getattr(node, "_attr")
        if isinstance(node, nodes.Getitem):
            base = self.code(node.node)
            if isinstance(node.arg, nodes.Slice):
                parts = [
                    "None" if part is None else self.code(part)
                    for part in (node.arg.start, node.arg.stop, node.arg.step)
                ]
                return f"({base})[{parts[0]}:{parts[1]}:{parts[2]}]", None
            return f"_item({base}, {self.code(node.arg)})", None
        if isinstance(node, nodes.And):
            return f"({self.code(node.left)} and {self.code(node.right)})", None
        if isinstance(node, nodes.Or):
            return f"({self.code(node.left)} or {self.code(node.right)})", None
        if isinstance(node, nodes.Not):
            return f"(not {self.code(node.node)})", bool
        if isinstance(node, nodes.Neg):
            return f"(-{self.code(node.node)})", None
        if isinstance(node, nodes.Pos):
            return f"(+{self.code(node.node)})", None
        if isinstance(node, nodes.BinExpr) and type(node) in _BINARY:
            return _BINARY[type(node)].format(self.code(node.left), self.code(node.right)), None
        if isinstance(node, nodes.Concat):
            return f"_concat({', '.join(self.code(n) for n in node.nodes)})", str
        if isinstance(node, nodes.Compare):
            out = self.code(node.expr)
            for operand in node.ops:
                if operand.op in ("in", "notin") and isinstance(
                    operand.expr, nodes.List | nodes.Tuple
                ):
                    # a list of constants to look in: one tuple, made once (compiling hundreds
                    # of literals per rule is a large share of a big rule set's load)
                    values = constant_values(operand.expr)
                    if values is not None:
                        out += f" {_COMPARE[operand.op]} {p.constant(values)}"
                        continue
                out += f" {_COMPARE[operand.op]} {self.code(operand.expr)}"
            return f"({out})", bool
        if isinstance(node, nodes.CondExpr):
            other = "None" if node.expr2 is None else self.code(node.expr2)
            return f"({self.code(node.expr1)} if {self.code(node.test)} else {other})", None
        if isinstance(node, nodes.Filter):
            function = p.bind("f", node.name, p.filter_callable(node.name))
            return f"{function}({self._args(node.node, node)})", None
        if isinstance(node, nodes.Test):
            function = p.bind("t", node.name, p.test_callable(node.name))
            return f"{function}({self._args(node.node, node)})", bool
        if isinstance(node, nodes.Call):
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise TemplateError("*args and **kwargs are not supported")
            arguments = self._args(None, node)
            target = node.node
            if (
                isinstance(target, nodes.Name)
                and target.name in p._globals
                and is_reading_now(p._globals[target.name])
            ):  # a time function: it gets the time conditions see, as templates' context holds it
                arguments = "{'now': now}" + (f", {arguments}" if arguments else "")
            function = (
                self._getattr(target, "_method")[0]
                if isinstance(target, nodes.Getattr)
                else self.code(target)
            )
            return f"_call({function}{', ' if arguments else ''}{arguments})", None
        if isinstance(node, nodes.List):
            return f"[{', '.join(self.code(i) for i in node.items)}]", list
        if isinstance(node, nodes.Tuple):
            inner = ", ".join(self.code(i) for i in node.items)
            return f"({inner}{',' if len(node.items) == 1 else ''})", tuple
        if isinstance(node, nodes.Dict):
            pairs = ", ".join(f"{self.code(i.key)}: {self.code(i.value)}" for i in node.items)
            return "{" + pairs + "}", dict
        raise TemplateError(f"{type(node).__name__.lower()} expressions are not supported here")

    def _getattr(self, node: nodes.Getattr, reader: str) -> tuple[str, Any]:
        """``node`` (``x.name``) read through ``reader`` (``_attr``, or ``_method`` for a
        call's target), an event model's field directly."""
        if node.attr.startswith("_"):
            raise TemplateError(f"attribute {node.attr!r} is not accessible (sandbox)")
        base, base_type = self._code(node.node)
        if (
            isinstance(base_type, type)
            and issubclass(base_type, BaseModel)
            and node.attr in base_type.model_fields
        ):
            return f"{base}.{node.attr}", field_type(base_type, node.attr)
        return f"{reader}({base}, {node.attr!r})", None

    def _args(self, first: nodes.Node | None, call: Any) -> str:
        if call.dyn_args is not None or call.dyn_kwargs is not None:
            raise TemplateError("*args and **kwargs are not supported")
        parts = [] if first is None else [self.code(first)]
        parts += [self.code(a) for a in call.args]
        parts += [f"{k.key}={self.code(k.value)}" for k in call.kwargs]
        return ", ".join(parts)


def split_simple_template(source: str) -> list[tuple[bool, str]] | None:
    """Split a template made only of text and ``{{ expression }}`` parts into
    ``[(is_expression, text)]``; None when it uses anything else (blocks, comments, whitespace
    control), which then needs Jinja2's full compiler."""
    if len(source) > MAX_TEMPLATE:
        raise TemplateError(f"the template is over {MAX_TEMPLATE} characters")
    if "{%" in source or "{#" in source:
        return None
    parts: list[tuple[bool, str]] = []
    position = 0
    while True:
        start = source.find("{{", position)
        if start == -1:
            if "}}" in source[position:]:
                return None
            parts.append((False, source[position:]))
            return [p for p in parts if p[1]]
        end = source.find("}}", start + 2)
        if end == -1:
            return None
        inner = source[start + 2 : end]
        if inner.startswith(("-", "+")) or inner.endswith(("-", "+")) or "{{" in inner:
            return None
        if "}}" in source[position:start]:
            return None
        parts.append((False, source[position:start]))
        parts.append((True, inner))
        position = end + 2


def output(value: Any, escaper: Callable[[Any], str] | None) -> str:
    """One ``{{ }}`` value as text: ``None`` is empty; markup targets give every value to their
    escaper (which decides about values marked safe). A value's text is sized first."""
    if value is None:
        return ""
    text = to_text(value)  # str subclasses (Markup, Safe) come back as they are
    return str(text) if escaper is None else escaper(text)


def simple_template_body(program: Program, parts: list[tuple[bool, str]], escaper: Any) -> str:
    """The body of a generated function rendering a simple template."""
    esc = program.escaper_name(escaper)
    pieces = []
    for is_expression, text in parts:
        if is_expression:
            expr = parse_expression(text, program.environment)
            pieces.append(f"_out({program.expression_code(expr)}, {esc})")
        else:
            pieces.append(repr(text))
    return "_checked(''.join([" + ", ".join(pieces) + "]))"
