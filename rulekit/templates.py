"""The sandbox conditions and templates run in, and the limits that keep them cheap.

Everything a rule author writes runs in a subclass of Jinja2's ``ImmutableSandboxedEnvironment``:
no underscore attributes, no unsafe callables, no mutation of data. On top of Jinja's rules:

* on event objects only the event model's fields are visible (no pydantic methods);
* work is capped: ``'a' * 10**7``, huge exponents, ``range`` abuse and filters that inflate text
  are cut off with a clear :class:`~rulekit.errors.TemplateError` instead of being computed;
* rendered output is capped (:data:`MAX_OUTPUT`), counted while it is produced;
* ``None`` renders as an empty string (a reply never says "None" to a client);
* values interpolated into a markup target are escaped by the target's escaper, through Jinja's
  ``finalize`` — the template's literal text stays the admin's markup, and a value marked
  ``|safe`` (already markup) is not escaped again.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.filters import do_center, do_indent, do_truncate
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup
from pydantic import BaseModel

from rulekit.errors import TemplateError

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
"""``range`` items one render may consume in total (nested loops included)."""
MAX_EXPONENT = 1_000

_budget: contextvars.ContextVar[list[int]] = contextvars.ContextVar("rulekit_render_budget")

Escaper = Callable[[str], str]


# -- limited operations (shared by compiled conditions and the Jinja sandbox) ----------------


def _too_big(what: str) -> TemplateError:
    return TemplateError(f"{what} would exceed {MAX_SEQUENCE} items; refusing to compute it")


def safe_mul(left: Any, right: Any) -> Any:
    """``left * right`` that refuses to build huge strings or lists."""
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            if len(seq) * max(count, 0) > MAX_SEQUENCE:
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
    return text.replace(old, new) if count is None else text.replace(old, new, count)


def truncate_safe(
    value: Any, length: int = 255, killwords: bool = False, end: str = "...", leeway: int = 5
) -> str:
    """Jinja's ``truncate``, except that markup (a ``|safe`` value) is never cut inside a tag,
    an entity or an escape. Plain values are escaped after truncation, so they are always safe."""
    if isinstance(value, Markup):
        text = str(value)
        if len(text) <= length + leeway:
            return value
        cut = _safe_cut(text, max(length - len(end), 0))
        return Markup(text[:cut] + end)
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
        return function(*args, **kwargs)

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
            replace=safe_replace,
            truncate=truncate_safe,
            default=default_filter,
            d=default_filter,
            center=_capped(do_center),
            indent=_capped(do_indent),
        )
        self.tests.update(defined=is_defined, undefined=is_undefined)

    def _finalize(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, Markup) or self.escaper is None:
            return value
        return self.escaper(str(value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return self._binops[operator](left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, BaseModel):
            return attr in type(obj).model_fields
        if isinstance(obj, str) and callable(value):
            return attr in SAFE_STR_METHODS
        return super().is_safe_attribute(obj, attr, value)


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


def with_budget(function: Callable[[], str]) -> str:
    """Run a render with a fresh loop-iteration budget."""
    token = _budget.set([MAX_ITERATIONS])
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
    return assigned
