"""Every filter and test of the sandbox runs through a guard: one step of the budget, the
result's size checked and counted, and, for filters whose arguments multiply the result
(``center(width)``, ``indent(width)``, ``wordwrap(wrapstring=...)``, ``replace``, ``urlize``'s
attributes, ``batch``/``slice`` counts), the size computed *before* the filter runs.

Results within a fixed factor of their inputs (``escape``, ``tojson``, ``upper``...) are
checked after: their input is limited, so what they build is too. Filters and tests added by
plugins get the same guard (:class:`GuardedFunctions` wraps whatever is stored in it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sized
from typing import Any

from jinja2 import filters as jinja_filters
from markupsafe import escape, soft_str

from rulekit.expr.budget import OverBudget, charged, current, limits, text_size
from rulekit.expr.budget import to_text as _to_text
from rulekit.expr.budget import too_big as _too_big
from rulekit.expr.markup import mark_safe
from rulekit.expr.striptags import striptags_filter
from rulekit.expr.urlize import urlize_filter

_WORD = re.compile(r"\w+")
"""A word, as Jinja's ``wordcount`` counts them."""
CHARS_PER_STEP = 1_000
"""A filter costs one step, and one more per this many characters of the text it reads."""


def _count(value: Any) -> int:
    """An ``int`` argument used as a size; anything else counts as 0 (the filter rejects it)."""
    return value if isinstance(value, int) else 0


def _text_of(value: Any) -> str:
    return value if isinstance(value, str) else soft_str(value)


def _center(value: str, width: int = 80) -> int:
    return max(len(value), _count(width))


def _indent(value: str, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    pad = len(width) if isinstance(width, str) else _count(width)
    return len(value) + (value.count("\n") + 1) * pad


def _wordwrap(
    value: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: Any = None,
    break_on_hyphens: bool = True,
) -> int:
    # every line but the last ends when the next word does not fit: two lines hold > width
    lines = 2 * len(value) // max(_count(width), 1) + value.count("\n") + 2
    return len(value) + lines * len(_text_of("\n" if wrapstring is None else wrapstring))


def _replace(value: str, old: Any, new: Any, count: Any = None) -> int:
    old, new = _text_of(old), _text_of(new)
    occurrences = value.count(old) if old else len(value) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(value) + occurrences * max(len(new) - len(old), 0)


def _urlize(
    value: str,
    trim_url_limit: Any = None,
    nofollow: bool = False,
    target: Any = None,
    rel: Any = None,
    extra_schemes: Any = None,
) -> int:
    if len(value) > limits().value:
        return len(value)  # the result is longer still: refused before its words are listed
    # every word that can become a link (it has '.', '@' or ':') repeats `target` and `rel`
    links = sum(1 for word in value.split() if "." in word or "@" in word or ":" in word)
    return len(value) + links * (len(_text_of(target or "")) + len(_text_of(rel or "")))


def _tojson(value: Any, indent: Any = None) -> int:
    # with an indent, every item of every level starts a line indented by its depth
    pad = len(indent) if isinstance(indent, str) else _count(indent)
    if not pad:
        return 0  # compact: within a fixed factor of the value's text, checked after
    most = limits().value
    total = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending and total <= most:
        item, depth = pending.pop()
        total += pad * depth + 2
        if isinstance(item, dict):
            total += sum(text_size(key) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            pending.extend((child, depth + 1) for child in item)
        else:
            total += text_size(item)
    return total


def _characters(value: Any) -> int:
    """The items of a list of a string's characters (``list``, ``slice`` and ``batch`` build
    one: a 4 MB message's would take 32 MB and more before its size is checked)."""
    return len(value) if isinstance(value, str) else 0


def _as_long(value: Any, *args: Any, **kwargs: Any) -> int:
    """``title`` and ``capitalize`` make a text as long as theirs (``title`` by way of a list
    of its words: 200 MiB for a 4 MB message, before the result's size was checked), and so
    at least do ``upper``, ``lower`` (a character's case may take three: ``ﬃ``) and
    ``escape`` (``<`` takes four): a 4 MB message made 50 MB before it was refused."""
    return len(value) if isinstance(value, str) else 0


def _list(value: Any) -> int:
    """``list`` makes as many items as its value has (a dict's ``items()`` of a client's
    500,000 keys made 500,000 pairs before the result was refused)."""
    return len(value) if isinstance(value, Sized) else 0


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> int:
    return max(_count(linecount) if fill_with is not None else 0, _characters(value))


def _slice(value: Any, slices: Any, fill_with: Any = None) -> int:
    return max(_count(slices), _list(value))  # (it lists its value first)


def wordcount(value: str) -> int:
    """Jinja's ``wordcount``, counting the words without making a list of them."""
    return sum(1 for _ in _WORD.finditer(value))


def _int(value: Any, default: Any = 0, base: Any = 10) -> int:
    digits = limits().digits
    if isinstance(value, str | bytes) and len(value) > digits + 100:
        raise OverBudget(f"a number with more than {digits} digits")
    return 0


SIZES: dict[Callable[..., Any], Callable[..., int]] = {
    jinja_filters.do_center: _center,
    jinja_filters.do_indent: _indent,
    jinja_filters.do_wordwrap: _wordwrap,
    jinja_filters.do_replace: _replace,
    jinja_filters.do_urlize: _urlize,
    urlize_filter: _urlize,
    jinja_filters.do_batch: _batch,
    jinja_filters.do_slice: _slice,
    jinja_filters.do_list: _list,
    jinja_filters.do_title: _as_long,
    jinja_filters.do_capitalize: _as_long,
    jinja_filters.do_upper: _as_long,
    jinja_filters.do_lower: _as_long,
    jinja_filters.do_forceescape: _as_long,
    escape: _as_long,
    jinja_filters.do_int: _int,
    jinja_filters.do_tojson: _tojson,
}
"""Filters whose arguments can multiply their result: the size they would build, computed from
the arguments (the first one, the value, as text for the text filters)."""

TEXT_FILTERS = frozenset(
    {
        jinja_filters.do_center, jinja_filters.do_indent, jinja_filters.do_wordwrap,
        jinja_filters.do_replace, jinja_filters.do_urlize, jinja_filters.do_capitalize,
        jinja_filters.do_title, jinja_filters.do_upper, jinja_filters.do_lower,
        jinja_filters.do_trim, jinja_filters.do_striptags, jinja_filters.do_wordcount,
        jinja_filters.do_forceescape, jinja_filters.do_truncate, jinja_filters.do_mark_safe,
        urlize_filter, wordcount, striptags_filter,
        escape, soft_str, mark_safe,
    }
)  # fmt: skip
"""Filters that work on the text of their value: the value is turned into text first, with
its size checked (``[big, big, big]|string`` is refused before the text is built)."""

MEASURED_FILTERS = frozenset(
    {
        jinja_filters.do_pprint, jinja_filters.do_tojson, jinja_filters.do_xmlattr,
        jinja_filters.do_urlencode,
    }
)  # fmt: skip
"""Filters that turn a whole structure into text themselves: its text size is checked first."""


ITEM_FILTERS = frozenset(
    {
        jinja_filters.do_sort, jinja_filters.do_unique, jinja_filters.do_min,
        jinja_filters.do_max, jinja_filters.do_groupby, jinja_filters.do_dictsort,
    }
)  # fmt: skip
"""Filters that do Python work for each item of their value (a key function, a comparison):
one step per item, counted before they run. A string's items are its characters: sorting a
client's 4 MB message took 3 s of CPU in one call, which no step inside could stop."""


def text_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a filter as working on the text of its value (see :data:`TEXT_FILTERS`)."""
    function.rulekit_text_input = True  # type: ignore[attr-defined]
    return function


def guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a sandboxed filter (see the module's description)."""
    if getattr(function, "rulekit_guarded", False):
        return function
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
    size = SIZES.get(function)
    textual = function in TEXT_FILTERS or getattr(function, "rulekit_text_input", False)
    measured = function in MEASURED_FILTERS
    per_item = function in ITEM_FILTERS

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = current()
        if len(args) > skip:
            value = args[skip]
            if textual and value is not None and not isinstance(value, str):
                args = (*args[:skip], _to_text(value), *args[skip + 1 :])
                value = args[skip]
            elif measured and text_size(value) > budget.limits.value:
                raise _too_big(f"the text of '{name}'")
            # a filter's work grows with the text it reads (urlize of 100,000 characters takes
            # ~0.4 s): counted as steps, so that the CPU clock is read between such uses
            if per_item and isinstance(value, Sized):  # a dict's keys() too
                budget.step(1 + len(value))
            else:
                budget.step(1 + len(value) // CHARS_PER_STEP if isinstance(value, str) else 1)
            if size is not None and size(*args[skip:], **kwargs) > budget.limits.value:
                raise _too_big(f"'{name}'")
        else:
            budget.step()
        result = function(*args, **kwargs)
        if len(args) > skip and result is args[skip]:
            return result  # nothing new was built
        return charged(result, budget)

    guarded.rulekit_guarded = True  # type: ignore[attr-defined]
    return guarded


def guard_test(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a sandboxed test: one step per use."""
    if getattr(function, "rulekit_guarded", False):
        return function

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        current().step()
        return function(*args, **kwargs)

    guarded.rulekit_guarded = True  # type: ignore[attr-defined]
    return guarded


class GuardedFunctions(dict[str, Callable[..., Any]]):
    """A sandbox's filters or tests: whatever is stored is stored guarded, so a filter added
    later (by a plugin, or by code that forgot) cannot bypass the budget."""

    def __init__(self, guard: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> None:
        super().__init__()
        self._guard = guard

    def __setitem__(self, name: str, function: Callable[..., Any]) -> None:
        super().__setitem__(name, self._guard(name, function))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, function in dict(*args, **kwargs).items():
            self[name] = function

    def setdefault(self, name: str, function: Any = None) -> Any:
        if name not in self:
            self[name] = function
        return self[name]

    def copy(self) -> GuardedFunctions:
        other = GuardedFunctions(self._guard)
        dict.update(other, self)
        return other
