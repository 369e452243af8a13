"""The sandbox's policy, shared by Jinja2 templates and compiled conditions: which attributes
templates may read, and the operators and filters with their sizes computed *before* building.

Each operation here either refuses (``OverBudget``) or builds a value of bounded size, which is
then counted against the render's budget (:mod:`rulekit.expr.budget`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from jinja2 import Environment, pass_environment
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from pydantic import BaseModel

from rulekit.errors import TemplateError
from rulekit.expr.budget import (
    OverBudget,
    current,
    produced,
    text_size,
    to_text,
    too_big,
)
from rulekit.expr.timefunctions import MAX_FORMAT
from rulekit.team import Team

# -- attributes ----------------------------------------------------------------------------

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
SAFE_DATE_ATTRS = frozenset(
    {
        "year", "month", "day", "hour", "minute", "second", "microsecond", "weekday",
        "isoweekday", "date", "time", "isoformat", "timestamp", "tzname", "days", "seconds",
        "total_seconds", "strftime",
    }
)  # fmt: skip
SAFE_LOOP_ATTRS = frozenset(
    {
        "index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
        "depth0", "previtem", "nextitem", "cycle", "changed",
    }
)  # fmt: skip


LIST_STR_METHODS = frozenset({"split", "rsplit", "splitlines"})
"""String methods that build a list of pieces: :func:`call_within_budget` bounds the list
before it is built (``text.split()`` of a 4 MB message made two million strings, about
100 MB, before the result's size was checked)."""
AS_LONG_STR_METHODS = frozenset({"upper", "lower", "casefold", "swapcase", "title", "capitalize"})
"""String methods whose result is at least as long as their text: a text over the value limit
is refused before they run (a 4 MB message's ``upper()`` made 50 MB before it was refused)."""
BUDGETED_STR_METHODS = LIST_STR_METHODS | AS_LONG_STR_METHODS
"""String methods called through :func:`call_within_budget`."""
LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
"""What ``str.splitlines`` ends a line at (``\r\n`` is one break)."""


def is_strftime(function: Any) -> bool:
    """Whether ``function`` is a date's, a time's or a datetime's ``strftime``."""
    owner = getattr(function, "__self__", None)
    return isinstance(owner, date | time) and getattr(function, "__name__", None) == "strftime"


def call_within_budget(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``function(*args, **kwargs)``; for a string's ``split``, ``rsplit`` and ``splitlines``,
    never building more than :data:`~rulekit.expr.budget.MAX_VALUE` pieces (one more, to tell
    that the whole list would be over it): ``split`` and ``rsplit`` are called with at most
    that ``maxsplit``, ``splitlines`` is refused when its text holds more line breaks. A date's
    ``strftime`` takes a format of at most :data:`~rulekit.expr.timefunctions.MAX_FORMAT`
    characters, as ``datetime()`` does (each ``%c`` of a client's 4 MB text made 24
    characters: 320 MB, before the result's size was checked)."""
    text = getattr(function, "__self__", None)
    name = getattr(function, "__name__", None)
    if isinstance(text, str) and name in AS_LONG_STR_METHODS:
        if len(text) > current().limits.value:
            raise too_big(f"'{name}'")
        return function(*args, **kwargs)
    if not isinstance(text, str) or name not in LIST_STR_METHODS:
        if is_strftime(function):
            given = args[0] if args else kwargs.get("format")
            if isinstance(given, str) and len(given) > MAX_FORMAT:
                raise TemplateError(f"strftime: the format is over {MAX_FORMAT} characters")
        return function(*args, **kwargs)
    most = current().limits.value
    if name == "splitlines":
        if len(text) > most:  # (a shorter text cannot have more lines than characters)
            breaks = sum(map(text.count, LINE_BREAKS)) - text.count("\r\n")
            if breaks > most:
                raise too_big(f"'{name}'")
        return function(*args, **kwargs)
    given = args[1] if len(args) > 1 else kwargs.get("maxsplit", -1)
    if isinstance(given, int) and 0 <= given < most:
        return function(*args, **kwargs)
    if isinstance(given, int):  # every piece asked for: no more than one over the limit
        if len(args) > 1:
            args = (args[0], most, *args[2:])
        else:
            kwargs = {**kwargs, "maxsplit": most}
    pieces = function(*args, **kwargs)
    if len(pieces) > most:
        raise too_big(f"'{name}'")
    return pieces


def allowed_attribute(obj: Any, name: str) -> bool:
    """Whether templates may read ``obj.name``. Everything not listed here is refused: event
    models show their fields, strings/dicts/lists/dates a few side-effect-free methods, Jinja's
    ``loop`` its counters. Numbers, classes, functions, generators and other objects show
    nothing (``(1).to_bytes``, ``{}.fromkeys``, ``gen.gi_frame`` are all refused)."""
    if name.startswith("_"):
        return False
    if isinstance(obj, BaseModel):
        return name in type(obj).model_fields
    if isinstance(obj, str):
        return name in SAFE_STR_METHODS
    if isinstance(obj, dict):
        return name in SAFE_DICT_METHODS
    if isinstance(obj, list | tuple):
        return name in SAFE_LIST_METHODS
    if isinstance(obj, datetime | date | time | timedelta):
        return name in SAFE_DATE_ATTRS
    if isinstance(obj, LoopContext):
        return name in SAFE_LOOP_ATTRS
    if isinstance(obj, Team):
        return name in Team.READABLE
    return False


# -- operators -----------------------------------------------------------------------------


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def op_add(left: Any, right: Any) -> Any:
    """``left + right``, refusing strings or lists over :data:`MAX_VALUE`."""
    budget = current()
    budget.step()
    if _sized(left) and _sized(right) and len(left) + len(right) > budget.limits.value:
        raise too_big("'+'")
    return produced(left + right, left, right)


def op_sub(left: Any, right: Any) -> Any:
    current().step()
    return produced(left - right, left, right)


def op_mul(left: Any, right: Any) -> Any:
    """``left * right``, refusing repeats over :data:`MAX_VALUE` and numbers over
    :data:`MAX_DIGITS` digits before computing them."""
    budget = current()
    budget.step()
    limits = budget.limits
    for seq, count in ((left, right), (right, left)):
        if _sized(seq) and isinstance(count, int) and len(seq) * max(count, 0) > limits.value:
            raise too_big("'*'")
    if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > limits.bits:
        raise OverBudget(f"'*' would make a number with more than {limits.digits} digits")
    return produced(left * right, left, right)


def op_truediv(left: Any, right: Any) -> Any:
    current().step()
    return produced(left / right, left, right)


def op_floordiv(left: Any, right: Any) -> Any:
    current().step()
    return produced(left // right, left, right)


def op_pow(left: Any, right: Any) -> Any:
    """``left ** right``, refusing results over :data:`MAX_DIGITS` digits before computing
    them (chained powers are checked at each step)."""
    budget = current()
    budget.step()
    limits = budget.limits
    if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > limits.bits:
            raise OverBudget(f"'**' would make a number with more than {limits.digits} digits")
    elif isinstance(left, float) and _is_int(right) and right.bit_length() > 64:
        raise OverBudget("'**' exponent is too large")
    return produced(left**right, left, right)


def op_mod(left: Any, right: Any) -> Any:
    """``left % right``: for a string, ``%``-formatting with the result's size computed first
    (every width, precision and value together, ``*`` and ``%(key)s`` included)."""
    budget = current()
    budget.step()
    if isinstance(left, str):
        if format_size(left, right, budget.limits.value) > budget.limits.value:
            raise too_big("'%' formatting")
        return produced(left % right, left)
    return produced(left % right, left, right)


BINARY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": op_add,
    "-": op_sub,
    "*": op_mul,
    "/": op_truediv,
    "//": op_floordiv,
    "%": op_mod,
    "**": op_pow,
}
"""Every binary operator of the template language, as run by templates and conditions."""


def concat(parts: Iterable[Any]) -> str:
    """``~``: ``None`` as an empty string; no text over :data:`MAX_VALUE`."""
    budget = current()
    budget.step()
    texts = []
    size = 0
    for part in parts:
        text = "" if part is None else to_text(part)
        size += len(text)
        if size > budget.limits.value:
            raise too_big("'~'")
        texts.append(text)
    return produced("".join(texts))


# -- %-formatting --------------------------------------------------------------------------


def _number(spec: str, start: int, args: list[Any], limit: int) -> tuple[int, int]:
    """A width or precision at ``spec[start]``: ``*`` (taken from ``args``) or digits."""
    if start < len(spec) and spec[start] == "*":
        value = args.pop() if args else 0
        return (abs(value) if isinstance(value, int) else 0), start + 1
    end = start
    while end < len(spec) and spec[end].isdigit():
        end += 1
    if end - start > 9:
        return limit + 1, end  # a width of ten digits or more is over anyway
    return (int(spec[start:end]) if end > start else 0), end


def format_size(spec: str, args: Any, limit: int) -> int:
    """An upper bound of the length of ``spec % args``, computed in one linear pass (no
    regular expression): the literal text plus, for each conversion, the larger of its width
    and its value's size (limited by its precision). Counting stops soon after ``limit``."""
    positional = list(reversed(args)) if isinstance(args, tuple) else [args]  # pop() takes next
    mapping = args if isinstance(args, Mapping) else None
    total = len(spec)
    position = spec.find("%")
    while position != -1 and total <= limit:
        i = position + 1
        value: Any = None
        keyed = i < len(spec) and spec[i] == "("
        if keyed:  # %(key)s: the key may hold balanced parentheses
            depth, i = 1, i + 1
            start = i
            while i < len(spec) and depth:
                depth += {"(": 1, ")": -1}.get(spec[i], 0)
                i += 1
            if mapping is not None:
                value = mapping.get(spec[start : i - 1])
        while i < len(spec) and spec[i] in "-+ #0":
            i += 1
        width, i = _number(spec, i, positional, limit)
        precision = None
        if i < len(spec) and spec[i] == ".":
            precision, i = _number(spec, i + 1, positional, limit)
        while i < len(spec) and spec[i] in "hlL":
            i += 1
        conversion = spec[i] if i < len(spec) else ""
        if conversion != "%" and not keyed:
            value = positional.pop() if positional else None
        if conversion in "c%":
            size = 1
        elif conversion in "sra":
            size = text_size(value) * (1 if conversion == "s" else 10)
            if precision is not None:
                size = min(size, precision)
        else:
            size = _number_size(conversion, value, precision)
        total += max(width, size)
        position = spec.find("%", i + 1)
    return total


def _number_size(conversion: str, value: Any, precision: int | None) -> int:
    """An upper bound of the characters of a number formatted by ``conversion``."""
    digits = 6 if precision is None else precision  # the float conversions' default
    if conversion in "eEgG":  # sign, a digit, the point, the digits, e+308
        return 10 + digits
    if isinstance(value, int):
        whole = value.bit_length() // 3 + 4  # sign and a '0x' / '0o' prefix
    elif isinstance(value, float):
        whole = 320  # up to 309 digits before the point ('%f' % 1e308)
    else:
        whole = text_size(value) + 16
    if conversion in "fF":
        return whole + 1 + digits
    return whole + (precision or 0)


# -- globals and filters -------------------------------------------------------------------


def safe_range(*args: int) -> Any:
    """``range`` with at most :data:`MAX_RANGE` items."""
    budget = current()
    budget.step()
    numbers = range(*args)
    most = budget.limits.range
    try:
        size = len(numbers)
    except OverflowError:
        size = most + 1
    if size > most:
        raise OverBudget(f"range() of more than {most} items")
    return iter(numbers)


@pass_environment
def safe_join(
    environment: Environment, value: Iterable[Any], d: str = "", attribute: Any = None
) -> str:
    """The ``join`` filter, sizing every item's text before building the whole."""
    if attribute is not None:
        value = map(make_attrgetter(environment, attribute), value)
    separator = to_text(d)
    texts: list[str] = []
    size = 0
    budget = current()
    for item in value:
        budget.step()
        size += text_size(item) + len(separator)
        if size > budget.limits.value:
            raise too_big("join")
        texts.append(to_text(item))
    return separator.join(texts)


@pass_environment
def safe_sum(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    """The ``sum`` filter, adding with ``+``'s limits at every step."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        total = op_add(total, item)
    return total


def format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    """The ``format`` filter (``'%s'|format(x)``): ``%``-formatting with its limits."""
    if args and kwargs:
        raise TypeError("format takes positional or keyword arguments, not both")
    result: str = op_mod(to_text(value), kwargs or args)
    return result
