"""Regular expressions in conditions and templates, in linear time.

Tests ``match`` (anchored at the start) and ``search`` (anywhere), and filters ``regex_search``,
``regex_findall`` and ``regex_replace``, with Ansible's semantics and arguments
(``ignorecase``, ``multiline``; ``regex_search``'s ``'\\1'`` / ``'\\g<name>'`` group arguments;
``regex_replace``'s ``count`` and ``mandatory_count``).

Patterns run on RE2, in time linear in the text (:mod:`rulekit.expr.patterns`: how Python's
syntax is read there, what is refused and why). Patterns must be literal strings, so that every
pattern is compiled and checked when rules load (:func:`check_patterns`).

Missing data (``None``) is no text: the tests are false, ``regex_search`` gives ``None``,
``regex_findall`` an empty list, ``regex_replace`` an empty string. Other values are matched as
their text. What the filters build is sized as it is built, within the render's budget
(:mod:`rulekit.expr.budget`): every match found is a step, and no list or text goes over the
value limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

from rulekit.errors import TemplateError
from rulekit.expr.budget import current, to_text, too_big
from rulekit.expr.nodewalk import walk
from rulekit.expr.patterns import loaded, written

PATTERN_FILTERS = frozenset({"regex_search", "regex_findall", "regex_replace"})
"""Filters whose first argument is a pattern."""
PATTERN_TESTS = frozenset({"match", "search"})
"""Tests whose first argument is a pattern."""


def _text(value: Any) -> str | None:
    return None if value is None else to_text(value)


# -- tests ---------------------------------------------------------------------------------


def is_match(
    value: Any, pattern: str = "", ignorecase: bool = False, multiline: bool = False
) -> bool:
    """``value is match(pattern)``: the pattern matches at the start of the text."""
    text = _text(value)
    if text is None:
        return False
    return written(pattern, ignorecase, multiline).match(text) is not None


def is_search(
    value: Any, pattern: str = "", ignorecase: bool = False, multiline: bool = False
) -> bool:
    """``value is search(pattern)``: the pattern matches anywhere in the text."""
    text = _text(value)
    if text is None:
        return False
    return written(pattern, ignorecase, multiline).search(text) is not None


# -- filters -------------------------------------------------------------------------------


def regex_search(
    value: Any, regex: str, *groups: str, ignorecase: bool = False, multiline: bool = False
) -> Any:
    """The first match of ``regex`` (the matched text), or, given group references
    (``'\\1'``, ``'\\g<name>'``), the list of those groups' texts; ``None`` without a match."""
    wanted = [_group_reference(group) for group in groups]
    text = _text(value)
    if text is None:
        return None
    found = written(regex, ignorecase, multiline).search(text)
    if found is None:
        return None
    if not wanted:
        return found.group()
    try:
        return [found.group(group) for group in wanted]
    except (IndexError, KeyError):
        raise TemplateError(f"regex_search: the pattern has no group {groups!r}") from None


def _group_reference(reference: Any) -> int | str:
    if isinstance(reference, str) and reference.startswith("\\g<") and reference.endswith(">"):
        name = reference[3:-1]
        return int(name) if name.isdigit() else name
    if isinstance(reference, str) and reference[1:].isdigit() and reference.startswith("\\"):
        return int(reference[1:])
    hint = _DOUBLE_QUOTED if isinstance(reference, str) and _control(reference) else ""
    raise TemplateError(
        f"regex_search: {reference!r} is not a group reference ('\\1' or '\\g<name>'){hint}"
    )


_DOUBLE_QUOTED = (
    ": in a string literal '\\1' is the character \\x01 and '\\b' a backspace (as in Python); "
    "write '\\\\1', '\\\\b' ('\\\\\\\\1' inside a YAML double-quoted string)"
)


def _control(text: str) -> bool:
    return any("\x01" <= char <= "\x08" for char in text)


def regex_findall(
    value: Any, regex: str, multiline: bool = False, ignorecase: bool = False
) -> list[Any]:
    """Every match of ``regex``, as Python's ``re.findall``: the matched texts, or the group's
    text for a pattern with one group, or tuples of the groups' texts."""
    text = _text(value)
    if text is None:
        return []
    regexp = written(regex, ignorecase, multiline)
    budget = current()
    found: list[Any] = []
    for match in regexp.finditer(text):
        budget.step()
        if len(found) >= budget.limits.value:
            raise too_big("regex_findall")
        if regexp.groups == 0:
            found.append(match.group())
        elif regexp.groups == 1:
            found.append(match.group(1) or "")
        else:
            found.append(tuple(part or "" for part in match.groups()))
    budget.build(len(found))
    return found


def regex_replace(
    value: Any = "",
    pattern: str = "",
    replacement: Any = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
    mandatory_count: int = 0,
) -> str:
    """``value`` with matches of ``pattern`` replaced (all, or the first ``count``);
    ``replacement`` may name groups (``\\1``, ``\\g<name>``). ``mandatory_count``: fail the
    render unless exactly that many replacements were made."""
    text = _text(value)
    if text is None:
        return ""
    regexp = written(pattern, ignorecase, multiline)
    template = _replacement(to_text(replacement))
    budget = current()
    most = budget.limits.value
    pieces: list[str] = []
    size = 0
    done = 0
    last = 0
    for match in regexp.finditer(text):
        if count and done >= count:
            break
        budget.step()
        start, end = match.span()
        piece = text[last:start]
        pieces.append(piece)
        size += len(piece)
        for part in template:
            expanded = part if isinstance(part, str) else _group(match, part.key)
            pieces.append(expanded)
            size += len(expanded)
        if size > most:
            raise too_big("regex_replace")
        last = end
        done += 1
    if mandatory_count and done != mandatory_count:
        raise TemplateError(f"regex_replace: {done} replacements made, {mandatory_count} required")
    if done == 0:
        return text
    size += len(text) - last
    if size > most:
        raise too_big("regex_replace")
    pieces.append(text[last:])
    budget.build(size)
    return "".join(pieces)


def _group(match: Any, key: int | str) -> str:
    try:
        text = match.group(key)
    except (IndexError, KeyError):
        raise TemplateError(f"regex_replace: the pattern has no group {key!r}") from None
    return text or ""


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "b": "\b", "\\": "\\"}


@dataclass(frozen=True)
class _Group:
    """A group reference in a replacement (a number or a name)."""

    key: int | str


def _replacement(template: str) -> list[str | _Group]:
    """A replacement as literal texts and group numbers or names, as Python's ``re.sub``
    reads it (``\\1``, ``\\g<1>``, ``\\g<name>``, ``\\n``...; other escapes stay as they are)."""
    parts: list[str | _Group] = []
    literal: list[str] = []
    index = 0
    while index < len(template):
        char = template[index]
        following = template[index + 1] if index + 1 < len(template) else ""
        if char != "\\" or not following:
            literal.append(char)
            index += 1
            continue
        reference: str | int
        if following.isdigit() and following != "0":
            end = index + 2
            if end < len(template) and template[end].isdigit():
                end += 1
            reference, index = int(template[index + 1 : end]), end
        elif following == "g" and template.startswith("<", index + 2):
            close = template.find(">", index + 3)
            if close == -1:
                raise TemplateError("regex_replace: unterminated \\g< in the replacement")
            name = template[index + 3 : close]
            reference, index = (int(name) if name.isdigit() else name), close + 1
        elif following in _ESCAPES:
            literal.append(_ESCAPES[following])
            index += 2
            continue
        elif following.isascii() and following.isalpha():
            # Python's re.sub (Ansible's) refuses them too, reserved for later use
            raise TemplateError(
                f"regex_replace: bad escape \\{following} in the replacement (a group is "
                "\\1 or \\g<name>; a backslash itself is \\\\)"
            )
        else:
            literal.append(char + following)
            index += 2
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_Group(reference))
    if literal:
        parts.append("".join(literal))
    return parts


# -- load time -----------------------------------------------------------------------------


def check_patterns(expr: nodes.Node) -> list[str]:
    """Problems with the patterns of ``expr``'s regex filters and tests: each pattern must be
    a literal string (so it is compiled now, not while an event waits) that RE2 can run."""
    problems: list[str] = []
    for node in walk(expr):
        if not isinstance(node, nodes.Filter | nodes.Test):
            continue
        names = PATTERN_FILTERS if isinstance(node, nodes.Filter) else PATTERN_TESTS
        if node.name not in names:
            if isinstance(node, nodes.Filter) and node.name in SELECTING_FILTERS:
                problems.extend(_selected_pattern(node))
            continue
        if isinstance(node, nodes.Filter) and node.name == "regex_replace":
            replacement = node.args[1] if len(node.args) > 1 else None
            if isinstance(replacement, nodes.Const) and isinstance(replacement.value, str):
                if _control(replacement.value):
                    problems.append(f"the replacement holds a control character{_DOUBLE_QUOTED}")
                else:
                    try:
                        _replacement(replacement.value)
                    except TemplateError as exc:
                        problems.append(str(exc))
        pattern = _pattern_argument(node)
        if pattern is None:
            problems.append(f"{node.name} needs a pattern")
        elif not isinstance(pattern, nodes.Const) or not isinstance(pattern.value, str):
            problems.append(
                f"the pattern of {node.name} must be a literal string (patterns are compiled "
                "when rules load)"
            )
        elif _control(pattern.value):
            problems.append(f"the pattern of {node.name} holds a control character{_DOUBLE_QUOTED}")
        else:
            # compiled now with the flags the call gives it, which warms the cache (the first
            # event pays nothing), and counted with the other patterns of the rules
            problems.extend(_loaded(pattern.value, node, _FLAGS[node.name]))
    return problems


_FLAGS = {
    "match": (1, 2),
    "search": (1, 2),
    "regex_search": (None, None),
    "regex_findall": (2, 1),
    "regex_replace": (2, 3),
}
"""Where a call's positional arguments (after the value) give ``ignorecase`` and
``multiline``: the pattern comes first, and each function takes its flags in its own order."""


def _flag(node: nodes._FilterTestCommon, name: str, at: int | None) -> tuple[bool, ...]:
    """The values the flag ``name`` (positional argument ``at``, else a keyword) may take in
    the call ``node``: its own when written as a constant, else either."""
    given: nodes.Expr | None = None
    if at is not None and len(node.args) > at:
        given = node.args[at]
    else:
        given = next((keyword.value for keyword in node.kwargs if keyword.key == name), None)
    if given is None:
        unknown = node.dyn_args is not None or node.dyn_kwargs is not None
        return (False, True) if unknown else (False,)
    if isinstance(given, nodes.Const):
        return (bool(given.value),)
    return (False, True)  # a value known when the event is: both are compiled now


def _loaded(
    pattern: str, node: nodes._FilterTestCommon, at: tuple[int | None, int | None]
) -> list[str]:
    """:func:`loaded` for each set of flags the call may give ``pattern``: the first
    problem."""
    for ignorecase in _flag(node, "ignorecase", at[0]):
        for multiline in _flag(node, "multiline", at[1]):
            problem = loaded(pattern, ignorecase, multiline)
            if problem:
                return [problem]
    return []


SELECTING_FILTERS = {"select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}
"""Filters that run a test named by an argument: the position of that argument (a pattern,
for ``match`` and ``search``, follows it)."""


def _selected_pattern(node: nodes.Filter) -> list[str]:
    """Problems with the pattern of ``items|select('search', pattern)`` and the like: it must
    be a literal string, compiled now, as for the test itself."""
    at = SELECTING_FILTERS[node.name]
    if len(node.args) <= at:
        return []
    test = node.args[at]
    if not isinstance(test, nodes.Const) or test.value not in PATTERN_TESTS:
        return []
    pattern = node.args[at + 1] if len(node.args) > at + 1 else None
    if not isinstance(pattern, nodes.Const) or not isinstance(pattern.value, str):
        return [
            f"the pattern of {node.name}({test.value!r}) must be a literal string (patterns "
            "are compiled when rules load)"
        ]
    if _control(pattern.value):
        return [f"the pattern of {test.value} holds a control character{_DOUBLE_QUOTED}"]
    return _loaded(pattern.value, node, (at + 2, at + 3))  # the test's flags follow it


def _pattern_argument(node: nodes._FilterTestCommon) -> nodes.Expr | None:
    if node.args:
        return node.args[0]
    for keyword in node.kwargs:
        if keyword.key in ("pattern", "regex"):
            return keyword.value
    return None
