"""The sandbox conditions and templates run in, and the limits that keep them cheap.

Everything a rule author writes runs in a subclass of Jinja2's ``ImmutableSandboxedEnvironment``:
no underscore attributes, no unsafe callables, no mutation of data. On top of Jinja's rules:

* on event objects only the event model's fields are visible (no pydantic methods);
* work is capped: ``'a' * 10**7``, huge exponents, ``range`` abuse, loops (nested ones
  included: every ``{% for %}`` iteration counts) and filters that inflate text are cut off with
  a clear :class:`~rulekit.errors.TemplateError` instead of being computed;
* ``~`` treats ``None`` as an empty string, as compiled conditions and simple templates do;
* rendered output is capped (:data:`MAX_OUTPUT`), counted while it is produced;
* ``None`` renders as an empty string (a reply never says "None" to a client);
* values interpolated into a markup target go to the target's escaper, through Jinja's
  ``finalize`` (all of them, ``Markup`` included: the escaper decides); the template's literal
  text stays the admin's markup, and ``|safe`` marks a value as markup
  (:class:`rulekit.markup.Safe`).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from jinja2 import nodes
from jinja2.filters import (
    do_batch,
    do_center,
    do_indent,
    do_slice,
    do_truncate,
    make_attrgetter,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup
from pydantic import BaseModel

from rulekit.errors import TemplateError
from rulekit.markup import Safe, mark_safe

MAX_EXPRESSION = 4_000
"""Characters in one condition expression."""
MAX_TEMPLATE = 20_000
"""Characters in one template."""
MAX_OUTPUT = 100_000
"""Characters one rendered value may have."""
MAX_SEQUENCE = 100_000
"""Items or characters a computed string or list may have."""
MAX_RANGE = 10_000
"""Items one ``range()`` may produce."""
MAX_ITERATIONS = 100_000
"""``range`` items and loop iterations one render may consume in total (nested loops included)."""
MAX_BUILT = 10 * MAX_OUTPUT
"""Characters the text-inflating filters (``center``, ``replace``, ``format``...) may build in one
render or one evaluation of conditions."""
MAX_EXPONENT = 1_000

T = TypeVar("T")

_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("rulekit_render_budget")

Escaper = Callable[[Any], str]


# -- limited operations (shared by compiled conditions and the Jinja sandbox) ----------------


def _too_big(what: str) -> TemplateError:
    return TemplateError(f"{what} would exceed {MAX_SEQUENCE} items; refusing to compute it")


def _size(value: Any, limit: int = MAX_SEQUENCE) -> int:
    """Characters and items in ``value``, nested ones included (``[s] * n`` holds ``n`` times
    ``s``); counting stops soon after ``limit``."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list | tuple | dict):
        return 1
    total = len(value)
    for item in value.values() if isinstance(value, dict) else value:
        if total > limit:
            break
        if isinstance(item, str | list | tuple | dict):
            total += _size(item, limit - total)
    return total


def safe_mul(left: Any, right: Any) -> Any:
    """``left * right`` that refuses to build huge strings or lists."""
    for seq, count in ((left, right), (right, left)):
        sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
        if sized and _size(seq) * max(count, 0) > MAX_SEQUENCE:
            raise _too_big("repeating a sequence")
    return left * right


def safe_pow(left: Any, right: Any) -> Any:
    """``left ** right`` with a bounded exponent."""
    if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
        raise TemplateError(f"exponent {right} is over the limit of {MAX_EXPONENT}")
    return left**right


def safe_add(left: Any, right: Any) -> Any:
    """``left + right`` that refuses to build huge strings or lists."""
    result = left + right
    if isinstance(result, str | list | tuple) and len(result) > MAX_SEQUENCE:
        raise _too_big("concatenating")
    return result


_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?")


def safe_mod(left: Any, right: Any) -> Any:
    """``left % right``; for string formatting, refuses ``*`` and huge widths."""
    if isinstance(left, str):
        for width, precision in _FORMAT_WIDTH.findall(left):
            for part in (width, precision):
                if part == "*" or (part and int(part) > MAX_SEQUENCE):
                    raise TemplateError("string formatting width is over the limit")
    return left % right


def safe_concat(parts: Iterable[Any]) -> str:
    """Jinja2's ``~``: ``None`` as an empty string, and no text over :data:`MAX_SEQUENCE`."""
    texts = ["" if part is None else str(part) for part in parts]
    if sum(map(len, texts)) > MAX_SEQUENCE:
        raise _too_big("concatenating")
    return "".join(texts)


def safe_join(value: Any, d: str = "", attribute: Any = None) -> str:
    """The ``join`` filter, refusing to build text over :data:`MAX_SEQUENCE`."""
    if attribute is not None:
        value = map(make_attrgetter(_ENV_FOR_FILTERS, attribute), value)
    texts: list[str] = []
    size = 0
    for item in value:
        size += _size(item) + len(d)
        if size > MAX_SEQUENCE:
            raise _too_big("join")
        texts.append(str(item))
    return str(d).join(texts)


def budget_iter(iterable: Iterable[Any]) -> Iterable[Any]:
    """The iterable of a ``{% for %}`` loop, each item counted against the render's budget."""
    budget = _budget.get(None)
    if budget is None:
        return iterable
    return _counted(iterable, budget)


def _counted(iterable: Iterable[Any], budget: list[int]) -> Iterator[Any]:
    for item in iterable:
        budget[0] -= 1
        if budget[0] < 0:
            raise TemplateError(f"the render used over {MAX_ITERATIONS} loop iterations")
        yield item


def safe_range(*args: int) -> Iterator[int]:
    """``range`` with at most :data:`MAX_RANGE` items, counted against the render's budget."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateError(f"range() of {len(rng)} items is over the limit of {MAX_RANGE}")
    budget = _budget.get(None)
    if budget is not None:
        budget[0] -= len(rng)
        if budget[0] < 0:
            raise TemplateError(f"the render used over {MAX_ITERATIONS} loop iterations")
    return iter(rng)


def safe_replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    """``str.replace`` that refuses to inflate text past the limit."""
    text = str(value)
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * (len(new) - len(old)) > MAX_SEQUENCE:
        raise _too_big("replace()")
    return _charged(text.replace(old, new) if count is None else text.replace(old, new, count))


def safe_batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
    """The ``batch`` filter, refusing to repeat a big ``fill_with`` many times."""
    if fill_with is not None and _size(fill_with) * max(linecount, 0) > MAX_SEQUENCE:
        raise _too_big("batch()")
    return do_batch(value, linecount, fill_with)


def _charged(result: T) -> T:
    """Count text built by a filter against the budget: ``map('center', n)`` over many items
    makes each call small and all of them together huge."""
    budget = _budget.get(None)
    if budget is not None and isinstance(result, str):
        budget[1] -= len(result)
        if budget[1] < 0:
            raise TemplateError(f"the render built over {MAX_BUILT} characters")
    return result


def truncate_safe(
    value: Any, length: int = 255, killwords: bool = False, end: str = "...", leeway: int = 5
) -> str:
    """Jinja's ``truncate``, except that markup (a ``|safe`` value) is never cut inside a tag,
    an entity or an escape. Plain values are escaped after truncation, so they are always safe."""
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


def _capped(function: Callable[..., Any], maximum: int = MAX_SEQUENCE) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for arg in (*args[1:], *kwargs.values()):
            if isinstance(arg, int) and arg > maximum:
                raise TemplateError(f"argument {arg} of {function.__name__} is over the limit")
        return _charged(function(*args, **kwargs))

    wrapper.__name__ = function.__name__
    wrapper.jinja_pass_arg = getattr(function, "jinja_pass_arg", None)  # type: ignore[attr-defined]
    return wrapper


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


SAFE_STR_METHODS = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
        "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "lower",
        "lstrip", "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rpartition",
        "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title",
        "upper",
    }
)  # fmt: skip
"""String methods templates may call (none of them can grow a string much)."""
SAFE_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
SAFE_LIST_METHODS = frozenset({"count", "index"})


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with rulekit's limits and attribute rules."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    _binops: dict[str, Callable[[Any, Any], Any]] = {
        "*": safe_mul,
        "**": safe_pow,
        "+": safe_add,
        "%": safe_mod,
    }

    def __init__(self, escaper: Escaper | None = None, **options: Any) -> None:
        super().__init__(finalize=self._finalize, autoescape=False, **options)
        self.escaper = escaper
        self.globals = {"range": safe_range, "dict": dict, "true": True, "false": False}
        self.filters.update(
            safe=mark_safe,
            replace=safe_replace,
            truncate=truncate_safe,
            default=default_filter,
            d=default_filter,
            center=_capped(do_center),
            indent=_capped(do_indent),
            format=_capped(_format),
            join=safe_join,
            slice=_capped(do_slice),
            batch=_capped(safe_batch),
        )
        self.tests.update(defined=is_defined, undefined=is_undefined)

    def compile(self, source: Any, *args: Any, **kwargs: Any) -> Any:
        """Jinja2's compiler, after routing loops and ``~`` through the work limits."""
        if isinstance(source, str):
            source = self._parse(source, kwargs.get("name"), kwargs.get("filename"))
        return super().compile(_LimitWork().visit(source), *args, **kwargs)

    budget_iter = staticmethod(budget_iter)
    safe_concat = staticmethod(safe_concat)

    def _finalize(self, value: Any) -> Any:
        if value is None:
            return ""
        return value if self.escaper is None else self.escaper(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return self._binops[operator](left, right)

    def wrap_str_format(self, value: Any) -> None:
        # Jinja2 lets str.format through (sandboxed against attribute access, not against
        # '{0:>999999999}'); it is not among SAFE_STR_METHODS, here as in compiled templates.
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, BaseModel):
            return attr in type(obj).model_fields
        if isinstance(obj, str) and callable(value):
            return attr in SAFE_STR_METHODS
        if isinstance(obj, type):
            return False  # dict.fromkeys and friends: classes are not data
        return super().is_safe_attribute(obj, attr, value)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    """The ``format`` filter (``'%s'|format(x)``), with ``%`` formatting's width limits."""
    if args and kwargs:
        raise TemplateError("format takes positional or keyword arguments, not both")
    formatted: str = safe_mod(str(value), kwargs or args)
    return formatted


class _LimitWork(NodeTransformer):
    """Counts every loop iteration against the budget and sends ``~`` through
    :func:`safe_concat` (Jinja2 compiles both to plain Python that no sandbox hook sees)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)  # transforms the children in place
        if not _is_call_of(node.iter, "budget_iter"):
            node.iter = _environment_call("budget_iter", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)  # transforms the children in place
        return _environment_call("safe_concat", nodes.Tuple(node.nodes, "load"))


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


def render_stream(chunks: Iterator[str]) -> str:
    """Join rendered chunks, stopping as soon as the output passes :data:`MAX_OUTPUT`."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateError(f"the rendered text is over {MAX_OUTPUT} characters")
        out.append(chunk)
    return "".join(out)


def with_budget(function: Callable[[], T]) -> T:
    """Run a render (or the evaluation of one event's conditions) with a fresh work budget."""
    token = _budget.set([MAX_ITERATIONS, MAX_BUILT])
    try:
        return function()
    finally:
        _budget.reset(token)


def jinja_names(node: nodes.Node) -> set[str]:
    """Names a template assigns itself (loop variables, ``set``), which are not context names."""
    assigned: set[str] = set()
    for target in node.find_all(nodes.Name):
        if target.ctx in ("store", "param"):
            assigned.add(target.name)
    if any(True for _ in node.find_all(nodes.For)):
        assigned.add("loop")  # the loop's own variable (loop.index, loop.last, ...)
    return assigned
