"""Patterns: the regular expressions rules write, in Python's syntax, run on RE2.

RE2 (``google-re2``) takes time linear in the text, whatever the pattern, so an admin's pattern
against a client's 4 MB message cannot stall the daemon. Where Python and RE2 spell the same
thing differently, a pattern is translated (:func:`as_re2`: ``\\d``, ``\\w`` and ``\\s`` of
any script, ``\\Z``, ``\\u00e4``, ``a{,3}``, ``a{02}``); what RE2 cannot run (backreferences,
lookaround) or would run with another meaning is refused, saying why (:func:`pattern_problem`).
Compiled patterns are cached (:func:`compiled`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import re2

from rulekit.errors import TemplateError
from rulekit.expr.syntax import ASCII_FLAG, boundary_problem, posix_class, python_repeat

MAX_PATTERN = 2_000
"""Characters in one pattern."""
_MAX_PROGRAM_MEMORY = 8 << 20  # RE2's own default: what one compiled pattern may use
MAX_PATTERNS = 1_000
"""Distinct patterns one set of rules may hold (fewer than the cache keeps, so that evaluating
an event never compiles a pattern again)."""
MAX_PROGRAMS = 4_000_000
"""RE2 instructions the distinct patterns of one set of rules may compile to, together (about
13 bytes each: a pattern such as ``\\w{250}`` compiles to 335,000 of them, in 0.1 s, and a
rules file of 1,000 such patterns took minutes and gigabytes to load)."""
_CACHED = 4 * MAX_PATTERNS

_UNSUPPORTED = (
    ("(?=", "lookahead"),
    ("(?!", "lookahead"),
    ("(?<=", "lookbehind"),
    ("(?<!", "lookbehind"),
    ("(?P=", "a backreference"),
)


_WHY = (
    ": patterns run on RE2, in time linear in the text, which supports neither "
    "backreferences nor lookaround"
)


def _options(*, ignorecase: bool = False, multiline: bool = False) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_PROGRAM_MEMORY
    options.case_sensitive = not ignorecase
    return options


def compiled(pattern: Any, ignorecase: Any = False, multiline: Any = False) -> Any:
    """``pattern`` compiled by RE2 (cached); :class:`TemplateError` saying why it cannot be.
    The flags count as true or false: a flag given a client's value (``ignorecase=message.text``)
    made each message its own cache entry, compiled again and kept in the cache with its text."""
    if not isinstance(pattern, str):
        raise TemplateError(f"a pattern is a string, not {type(pattern).__name__}")
    return _compiled(pattern, bool(ignorecase), bool(multiline))


def _compiled(pattern: str, ignorecase: bool, multiline: bool) -> Any:
    key = (pattern, ignorecase, multiline)
    with _cache_lock:
        regexp = _cache.get(key)
        if regexp is not None:
            _cache.move_to_end(key)
            return regexp
    problem = pattern_problem(pattern)
    if problem:
        raise TemplateError(problem)
    # RE2's `(?m)` is Python's re.MULTILINE: ^ and $ at every line
    source = f"(?m:{as_re2(pattern)})" if multiline else as_re2(pattern)
    try:
        regexp = re2.compile(source, _options(ignorecase=ignorecase))
    except re2.error as exc:  # valid as written, not with these flags (too large ignoring case)
        flags = [name for name, on in (("ignorecase", ignorecase), ("multiline", multiline)) if on]
        raise TemplateError(
            f"with {' and '.join(flags) or 'no flags'}, RE2 cannot compile the pattern: "
            f"{_reason(exc)}"
        ) from None
    _keep(key, regexp)
    return regexp


_cache: OrderedDict[tuple[str, bool, bool], Any] = OrderedDict()
_cache_lock = threading.Lock()
_cached_instructions = 0


def _keep(key: tuple[str, bool, bool], regexp: Any) -> None:
    """Cache ``regexp``, dropping the least recently used patterns beyond :data:`_CACHED`
    patterns or twice :data:`MAX_PROGRAMS` instructions (the rules loaded and those reloaded)."""
    global _cached_instructions
    with _cache_lock:
        if key in _cache:
            return
        _cache[key] = regexp
        _cached_instructions += _instructions(regexp)
        while len(_cache) > _CACHED or (
            _cached_instructions > 2 * MAX_PROGRAMS and len(_cache) > 1
        ):
            _, dropped = _cache.popitem(last=False)
            _cached_instructions -= _instructions(dropped)


def _instructions(regexp: Any) -> int:
    return int(max(regexp.programsize, 0)) + int(max(regexp.reverseprogramsize, 0))


_HEX = frozenset("0123456789abcdefABCDEF")


_WORD = r"\p{L}\p{N}_"
_SPACE = (
    r"\t\n\x0b\f\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
    r"\x{205f}\x{3000}"
)
_CLASSES = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": f"[{_WORD}]", "W": f"[^{_WORD}]"}
_CLASSES |= {"s": f"[{_SPACE}]", "S": f"[^{_SPACE}]"}
"""Python's ``\\d``, ``\\w``, ``\\s`` (and negations) match any script; RE2's only ASCII."""
_IN_CLASS = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": _WORD, "s": _SPACE}
"""The same inside ``[...]`` (where ``\\W`` and ``\\S`` have no RE2 spelling: refused)."""


def as_re2(pattern: str) -> str:
    """``pattern`` (Python's syntax, as Ansible's filters take it) in RE2's words where the two
    spell the same thing differently: ``\\d``, ``\\w`` and ``\\s`` match digits, letters and
    spaces of any script (RE2's only ASCII ones; a leading ``(?a)`` keeps them ASCII, as in
    Python), ``\\Z`` is ``\\z``, ``\\u00e4`` and ``\\U0001F600`` are ``\\x{...}``, ``a{,3}``
    is ``a{0,3}``, ``a{,}`` ``a{0,}`` and ``a{02}`` ``a{2}`` (RE2 would read them as text),
    ``(?u)`` is RE2's default. Everything else is
    left as written (RE2 refuses what it cannot run)."""
    if "\\" not in pattern and "{" not in pattern and "(?" not in pattern:
        return pattern
    ascii_only = pattern.startswith(ASCII_FLAG)
    if ascii_only:
        pattern = pattern[len(ASCII_FLAG) :]
    out: list[str] = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        following = pattern[index + 1] if index + 1 < len(pattern) else ""
        if char == "\\" and following:
            width = {"u": 4, "U": 8}.get(following, 0)
            digits = pattern[index + 2 : index + 2 + width]
            if width and len(digits) == width and set(digits) <= _HEX:
                out.append(f"\\x{{{digits}}}")
                index += 2 + width
                continue
            classes = _IN_CLASS if in_class else _CLASSES
            if following == "Z" and not in_class:
                out.append("\\z")
            elif not ascii_only and following in classes:
                out.append(classes[following])
            else:
                out.append(char + following)
            index += 2
            continue
        if in_class:
            in_class = char != "]" or pattern[index - 1] == "["  # `[]a]`: a leading ] is text
        elif char == "[":
            in_class = True
            if pattern.startswith("^", index + 1):  # `[^]a]`
                out.append("[^")
                index += 2
                if pattern.startswith("]", index):
                    out.append("]")
                    index += 1
                continue
        elif char == "{" and (repeat := python_repeat(pattern, index)) is not None:
            out.append(repeat[0])
            index = repeat[1]
            continue
        elif pattern.startswith("(?u)", index):
            index += 4
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _class_problem(pattern: str) -> str | None:
    """Why ``pattern`` means something else on RE2 than in Python, though RE2 runs it: ``\\W``
    or ``\\S`` inside ``[...]`` (no RE2 spelling for any script), a POSIX class
    (``[[:alpha:]]``: in Python the characters ``[:alph`` and a ``]``), or a word boundary
    (:func:`~rulekit.expr.syntax.boundary_problem`)."""
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        following = pattern[index + 1] if index + 1 < len(pattern) else ""
        if char == "\\" and following:
            if in_class and following in "WS" and not pattern.startswith(ASCII_FLAG):
                return (
                    f"pattern {pattern!r}: \\{following} inside [...] is not supported "
                    f"(RE2 cannot say it for every script): write (?:[...]|\\{following})"
                )
            index += 2
            continue
        if in_class:
            posix = posix_class(pattern, index) if char == "[" else None
            if posix:
                return (
                    f"pattern {pattern!r}: {posix} inside [...] is a class of characters on RE2, "
                    "and in Python a set of those very characters: write what it means "
                    r"(\d, \s, [^\W\d_] for letters, a range), or escape the [ as \["
                )
            in_class = char != "]" or pattern[index - 1] == "["
        elif char == "[":
            in_class = True
            index += 2 if pattern.startswith("^", index + 1) else 1
            index += 1 if pattern.startswith("]", index) else 0  # `[]a]`: a leading ] is text
            continue
        index += 1
    return boundary_problem(pattern)


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` cannot be a pattern (one line), or ``None`` when RE2 compiles it."""
    if not isinstance(pattern, str):
        return f"a pattern is a string, not {type(pattern).__name__}"
    if len(pattern) > MAX_PATTERN:
        return f"the pattern is over {MAX_PATTERN} characters"
    try:
        re2.compile(as_re2(pattern), _options())
    except re2.error as exc:
        # only a pattern RE2 refuses is looked at for what it lacks: `a\(?!` and `[(?=]` are
        # plain RE2 patterns, whatever they look like
        reason = _reason(exc)
        for opening, kind in _UNSUPPORTED:
            if opening in pattern:
                return f"pattern {pattern!r}: {kind} ({opening}...) is not supported{_WHY}"
        if _has_backreference(pattern):
            return f"pattern {pattern!r}: a backreference (\\1) is not supported{_WHY}"
        return f"pattern {pattern!r} is not a valid RE2 pattern: {reason}"
    return _class_problem(pattern)


def _reason(exc: Exception) -> str:
    """What RE2 said, as text."""
    return exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)


def _has_backreference(pattern: str) -> bool:
    index = pattern.find("\\")
    while index != -1 and index + 1 < len(pattern):
        following = pattern[index + 1]
        if (following.isdigit() and following != "0") or following in "gk":
            return True
        index = pattern.find("\\", index + 2)
    return False


class _Loaded:
    """The distinct patterns a load of rules compiled so far, and their instructions."""

    __slots__ = ("compiled", "full", "instructions", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.compiled: set[tuple[str, bool, bool]] = set()
        """Each pattern with the flags it was compiled with (each its own program)."""
        self.instructions = 0
        self.full = False


_loading: ContextVar[_Loaded | None] = ContextVar("rulekit_patterns_loading", default=None)


@contextlib.contextmanager
def counted_patterns() -> Iterator[None]:
    """Count the patterns :func:`loaded` compiles in this block against :data:`MAX_PATTERNS`
    and :data:`MAX_PROGRAMS` (one load of a set of rules)."""
    token = _loading.set(_Loaded())
    try:
        yield
    finally:
        _loading.reset(token)


def loaded(pattern: str, ignorecase: bool = False, multiline: bool = False) -> str | None:
    """Compile ``pattern`` with the flags a rule gives it, as rules load: why it cannot be, or
    why it does not fit with the patterns loaded before it (inside :func:`counted_patterns`),
    or None. Each set of flags is a program of its own, counted with the others: a pattern
    RE2 compiles within its memory as written may not fit once case is ignored (each letter
    becomes a class of its cases)."""
    counts = _loading.get()
    key = (pattern, ignorecase, multiline)
    if counts is not None and key not in counts.compiled:
        if pattern not in counts.seen and len(counts.seen) >= MAX_PATTERNS:
            return f"the rules hold more than {MAX_PATTERNS} distinct patterns"
        if counts.full:  # the next pattern is not compiled (each may take 0.1 s and 5 MB)
            return _over(None)
    try:
        regexp = compiled(pattern, ignorecase, multiline)
    except TemplateError as exc:
        return str(exc)
    if counts is None or key in counts.compiled:
        _written.add(pattern)
        return None
    size = max(regexp.programsize, 0)
    if counts.instructions + size > MAX_PROGRAMS:
        counts.full = True
        return _over(size)
    counts.seen.add(pattern)
    counts.compiled.add(key)
    counts.instructions += size
    _written.add(pattern)
    return None


_written: set[str] = set()
"""The patterns rules loaded in this process have written (:func:`loaded`)."""


def written(pattern: Any, ignorecase: Any = False, multiline: Any = False) -> Any:
    """:func:`compiled`, for a pattern the loaded rules wrote: what a rule runs. A pattern made
    while an event is evaluated (``items|select('search', message.text)`` gave the test a
    client's text) is refused: each took RE2 up to 0.1 s to compile, inside one step of the
    render's budget, and thirty such words held a render for five seconds."""
    if pattern not in _written:
        raise TemplateError(
            "the pattern is not one the rules wrote: a pattern must be a literal string "
            "(patterns are compiled when rules load)"
        )
    return compiled(pattern, ignorecase, multiline)


def _over(size: int | None) -> str:
    this = "" if size is None else f" (this one to {size})"
    return (
        f"the rules' patterns compile to more than {MAX_PROGRAMS} RE2 instructions together"
        f"{this}: fewer or simpler patterns (a repeat such as \\w{{200}} compiles to a copy "
        "of \\w per repetition)"
    )
