"""The sandbox conditions and templates run in.

Everything a rule author writes runs in a subclass of Jinja2's ``ImmutableSandboxedEnvironment``
with rulekit's policy (:mod:`rulekit.expr.policy`: which attributes are readable, the operators)
and budget (:mod:`rulekit.expr.budget`: what a render may compute, counted everywhere):

* attributes: only what :func:`~rulekit.expr.policy.allowed_attribute` lists (event fields, a few
  string, dict, list and date methods, ``loop``'s counters), never anything starting with ``_``;
* every operator, filter, test and call (macros, ``caller()``, recursive ``loop()``, methods)
  goes through the budget; sizes that an argument multiplies are computed before building;
* every ``{% for %}`` iteration counts, and the text of macros, blocks and ``{% set %}``
  blocks is sized before it is joined;
* ``{% extends %}``, ``{% include %}`` and ``{% import %}`` are not supported (rules have no
  template files);
* ``~`` treats ``None`` as an empty string, as compiled conditions and simple templates do;
* ``None`` renders as an empty string (a reply never says "None" to a client);
* values interpolated into a markup target go to the target's escaper, through Jinja's
  ``finalize`` (all of them, ``Markup`` included: the escaper decides); the template's literal
  text stays the admin's markup, and ``|safe`` marks a value as markup
  (:class:`rulekit.expr.markup.Safe`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from jinja2 import Template, nodes
from jinja2.filters import do_truncate
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from rulekit.errors import TemplateError
from rulekit.expr.budget import (
    MAX_EXPRESSION,
    MAX_OUTPUT,
    MAX_TEMPLATE,
    Counted,
    Limits,
    OverBudget,
    counted,
    current,
    in_budget,
    produced,
    to_text,
    too_big,
    with_budget,
)
from rulekit.expr.guards import (
    GuardedFunctions,
    guard_filter,
    guard_test,
    text_filter,
    wordcount,
)
from rulekit.expr.markup import Safe, mark_safe
from rulekit.expr.policy import (
    BINARY_OPERATORS,
    BUDGETED_STR_METHODS,
    SAFE_DICT_METHODS,
    allowed_attribute,
    call_within_budget,
    concat,
    format_filter,
    is_strftime,
    safe_join,
    safe_range,
    safe_sum,
)
from rulekit.expr.striptags import striptags_filter
from rulekit.expr.urlize import urlize_filter

__all__ = [
    "MAX_EXPRESSION",
    "MAX_OUTPUT",
    "MAX_TEMPLATE",
    "Sandbox",
    "jinja_names",
    "render_stream",
    "truncate_safe",
    "with_budget",
]

Escaper = Callable[[Any], str]

COMPILE_LIMITS = Limits(output=1_000, value=1_000, digits=100, range=100, steps=1_000, built=10_000)
"""The budget of the constant parts Jinja2 computes while compiling a template."""


@text_filter
def truncate_safe(
    value: Any, length: int = 255, killwords: bool = False, end: str = "...", leeway: int = 5
) -> str:
    """Jinja's ``truncate``, except that markup (a ``|safe`` value) is never cut inside a tag,
    an entity or an escape. Plain values are escaped after truncation, so they are always safe."""
    if isinstance(length, int) and isinstance(end, str) and length < len(end):
        raise TemplateError(f"truncate: the length ({length}) is shorter than the end ({len(end)})")
    if isinstance(value, Markup | Safe):
        text = str(value)
        if len(text) <= length + leeway:
            return value
        cut = _safe_cut(text, max(length - len(end), 0))
        return type(value)(text[:cut] + end)
    return do_truncate(
        _ENV_FOR_FILTERS, "" if value is None else value, length, killwords, end, leeway
    )


def _safe_cut(text: str, limit: int) -> int:
    """The largest cut position ≤ ``limit`` that is not inside ``<...>``, ``&...;`` or after a
    lone backslash."""
    cut = limit
    open_tag = text.rfind("<", 0, cut)
    if open_tag != -1 and text.rfind(">", 0, cut) < open_tag:
        cut = open_tag
    amp = text.rfind("&", 0, cut)
    if amp != -1 and ";" not in text[amp:cut] and re.match(r"&#?\w*$", text[amp:cut]):
        cut = amp
    while cut > 0 and text[cut - 1] == "\\":
        cut -= 1
    return cut


def default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """``x | default(y)``: ``y`` when ``x`` is missing (``None``), or falsy with ``boolean``."""
    if value is None or (boolean and not value):
        return default_value
    return value


def is_defined(value: Any) -> bool:
    """``x is defined``: missing data is ``None`` in rulekit, so defined means "not None"."""
    return value is not None


def is_undefined(value: Any) -> bool:
    return value is None


class BudgetedTemplate(Template):
    """A template whose renders always run within a budget (the caller's, or a fresh one)."""

    def generate(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        return in_budget(super().generate(*args, **kwargs))

    def render(self, *args: Any, **kwargs: Any) -> str:
        return render_stream(self.generate(*args, **kwargs))


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with rulekit's policy and budget."""

    intercepted_binops = frozenset(BINARY_OPERATORS)
    template_class = BudgetedTemplate

    def __init__(self, escaper: Escaper | None = None, **options: Any) -> None:
        super().__init__(finalize=self._finalize, autoescape=False, **options)
        self.escaper = escaper
        self.globals = {"range": safe_range, "dict": dict, "true": True, "false": False}
        filters = GuardedFunctions(guard_filter)
        filters.update(self.filters)
        filters.update(
            safe=mark_safe,
            truncate=truncate_safe,
            default=default_filter,
            d=default_filter,
            format=format_filter,
            join=safe_join,
            sum=safe_sum,
            urlize=urlize_filter,  # Jinja2's is quadratic in some words
            wordcount=wordcount,  # Jinja2's makes a list of the words
            striptags=striptags_filter,  # markupsafe's lists the words of the whole text
        )
        self.filters = filters
        tests = GuardedFunctions(guard_test)
        tests.update(self.tests)
        tests.update(defined=is_defined, undefined=is_undefined)
        self.tests = tests  # type: ignore[assignment]

    def compile(self, source: Any, *args: Any, **kwargs: Any) -> Any:
        """Jinja2's compiler, after routing loops and ``~`` through the budget. Jinja2 computes
        constant parts while compiling (``{{ 'ab'|center(9) }}``) and writes them into the
        code: within :data:`COMPILE_LIMITS`, so that only small constants are computed early;
        anything bigger is left to the render, with the render's budget."""
        if isinstance(source, str):
            source = self._parse(source, kwargs.get("name"), kwargs.get("filename"))
        tree = _LimitWork().visit(source)
        return with_budget(
            lambda: super(Sandbox, self).compile(tree, *args, **kwargs), limits=COMPILE_LIMITS
        )

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        with literal_escapes():
            return super()._parse(source, name, filename)

    budget_iter = staticmethod(counted)
    safe_concat = staticmethod(concat)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Joins the text of a macro, a block, ``{% set %}`` or ``{% filter %}`` block: sized
        before it is joined (the parts are references, the joined text is new)."""
        budget = current()
        texts: list[str] = []
        size = 0
        for part in parts:
            size += len(part)
            if size > budget.limits.value:
                raise too_big("the text of a macro or block")
            texts.append(part)
        budget.build(size)
        return "".join(texts)

    def _finalize(self, value: Any) -> Any:
        if value is None:
            return ""
        text = to_text(value)  # str subclasses (Markup, Safe) come back as they are
        return text if self.escaper is None else self.escaper(text)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return BINARY_OPERATORS[operator](left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call of a template: a step, one level deeper; a recursive ``loop(items)``
        gets its items counted like a loop's."""
        budget = current()
        if isinstance(obj, LoopContext) and args:
            args = (Counted(args[0], budget), *args[1:])
        budget.enter()
        try:
            if (
                isinstance(getattr(obj, "__self__", None), str)
                and obj.__name__ in BUDGETED_STR_METHODS
            ) or is_strftime(obj):
                result = call_within_budget(obj, args, kwargs)  # (a string's or date's: safe)
            else:
                result = super().call(context, obj, *args, **kwargs)
        finally:
            budget.leave()
        return produced(result, obj, *args)

    def wrap_str_format(self, value: Any) -> None:
        # Jinja2 lets str.format through (sandboxed against attribute access, not against
        # '{0:>999999999}'); it is not among the allowed string methods, here as in conditions.
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return allowed_attribute(obj, attr) and super().is_safe_attribute(obj, attr, value)


class _LimitWork(NodeTransformer):
    """Counts every loop iteration against the budget and sends ``~`` through
    :func:`~rulekit.expr.policy.concat` (Jinja2 compiles both to plain Python that no sandbox hook
    sees); refuses template inheritance and inclusion."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop = cast(nodes.For, self.generic_visit(node))
        if not _is_call_of(loop.iter, "budget_iter"):
            loop.iter = _environment_call("budget_iter", loop.iter)
        return loop

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat = cast(nodes.Concat, self.generic_visit(node))
        return _environment_call("safe_concat", nodes.Tuple(concat.nodes, "load"))

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        # a call's target stays an attribute (``fields.items()`` is the method); only its
        # object is visited
        target = node.node
        if isinstance(target, nodes.Getattr):
            target.node = self.visit(target.node)
            node.args = [self.visit(arg) for arg in node.args]
            node.kwargs = [self.visit(kwarg) for kwarg in node.kwargs]
            node.dyn_args = None if node.dyn_args is None else self.visit(node.dyn_args)
            node.dyn_kwargs = None if node.dyn_kwargs is None else self.visit(node.dyn_kwargs)
            return node
        return self.generic_visit(node)

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:
        # a key named like a dict method is read as the key (``conversation.fields.items`` is
        # the field ``items``), as conditions read it (rulekit.expr.codegen.attr): Jinja2's
        # ``x['items']`` tries the key first, then the attribute
        read = cast(nodes.Getattr, self.generic_visit(node))
        if read.attr not in SAFE_DICT_METHODS or read.ctx != "load":
            return read
        item = nodes.Getitem(read.node, nodes.Const(read.attr), "load")
        item.set_lineno(read.lineno or 1)
        return item

    def _unsupported(self, node: nodes.Node) -> nodes.Node:
        tag = {"FromImport": "from", "Extends": "extends"}.get(type(node).__name__)
        raise TemplateError(f"{{% {tag or type(node).__name__.lower()} %}} is not supported")

    visit_Extends = visit_Include = visit_Import = visit_FromImport = _unsupported


@contextlib.contextmanager
def literal_escapes() -> Iterator[None]:
    """Parse with an unknown escape in a string literal kept as written (``'\\d+'`` is the
    pattern ``\\d+``), as Python and Jinja2 do, without their deprecation warning: patterns
    are full of them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        yield


def _is_call_of(node: nodes.Node, name: str) -> bool:
    return (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.EnvironmentAttribute)
        and node.node.name == name
    )


def _environment_call(name: str, argument: nodes.Node) -> nodes.Call:
    call = nodes.Call(nodes.EnvironmentAttribute(name), [argument], [], None, None)
    call.set_lineno(argument.lineno or 1)
    return call


_ENV_FOR_FILTERS = Sandbox()


def check_output(text: str) -> str:
    """``text`` if it is within the output limit (:data:`~rulekit.expr.budget.MAX_OUTPUT`)."""
    if len(text) > current().limits.output:
        raise OverBudget(f"output larger than {current().limits.output} characters")
    return text


def render_stream(chunks: Iterator[str]) -> str:
    """Join rendered chunks, stopping as soon as the output passes the output limit."""
    most = current().limits.output
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > most:
            raise OverBudget(f"output larger than {most} characters")
        out.append(chunk)
    return "".join(out)


def jinja_names(node: nodes.Node) -> set[str]:
    """Names a template defines itself (loop variables, ``set``, macros and their ``caller``,
    ``self`` for blocks), which are not context names."""
    assigned: set[str] = set()
    for target in node.find_all(nodes.Name):
        if target.ctx in ("store", "param"):
            assigned.add(target.name)
    for macro in node.find_all(nodes.Macro):
        assigned.update((macro.name, "caller"))
    if any(True for _ in node.find_all(nodes.CallBlock)):
        assigned.add("caller")
    if any(True for _ in node.find_all(nodes.For)):
        assigned.add("loop")  # the loop's own variable (loop.index, loop.last, ...)
    if any(True for _ in node.find_all(nodes.Block)):
        assigned.add("self")  # blocks of the template: self.name()
    return assigned
