"""Values from the environment in a YAML tree: ``${NAME}``, and ``${NAME:-default}`` for a
default, in every string.

This is how a config file names its secrets without holding them (``${SLACK_BOT_TOKEN}``): they
are taken from the environment when the file is read. A ``${NAME}`` without a default whose
variable is unset or empty is found beforehand (:func:`unset_variables`), so that the config can
warn of a value that will be missing at run time. The line numbers a tree remembers
(:class:`rulekit.yamlsource.LineDict`, :class:`~rulekit.yamlsource.LineList`) are kept.
"""

from __future__ import annotations

import re
from typing import Any

from rulekit import yamlsource

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def unset_variables(
    value: Any, environ: dict[str, str], path: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """Where a ``${NAME}`` without a ``:-default`` names a variable that is unset or empty:
    ``(path in the tree, NAME)`` pairs, in file order."""
    if isinstance(value, str):
        last = value.rfind("}") + 1  # as interpolate() reads it
        return [
            (path, match.group(1))
            for match in _VAR.finditer(value[:last])
            if match.group(2) is None and not environ.get(match.group(1))
        ]
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in unset_variables(item, environ, (*path, key))
        ]
    if isinstance(value, list):
        return [
            found
            for index, item in enumerate(value)
            for found in unset_variables(item, environ, (*path, index))
        ]
    return []


def padded_variables(
    value: Any, environ: dict[str, str], path: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """Where a ``${NAME}`` names a variable whose value begins or ends with whitespace (a line
    break, mostly: a secret mounted from a file written by ``echo``, a ``$(cat file)`` kept
    whole): ``(path in the tree, NAME)`` pairs, in file order. The value is used as it is,
    and a token, a password or a webhook secret with a line break in it matches nothing."""
    if isinstance(value, str):
        last = value.rfind("}") + 1  # as interpolate() reads it
        return [
            (path, match.group(1))
            for match in _VAR.finditer(value[:last])
            if (found := environ.get(match.group(1))) and found != found.strip()
        ]
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in padded_variables(item, environ, (*path, key))
        ]
    if isinstance(value, list):
        return [
            found
            for index, item in enumerate(value)
            for found in padded_variables(item, environ, (*path, index))
        ]
    return []


def malformed_references(
    value: Any, path: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], str]]:
    """Where a ``${`` starts no ``${NAME}`` or ``${NAME:-default}`` (``${SLACK_TOKEN``, no
    closing brace; ``${SLACK-TOKEN}``, ``${TOKEN:?}``): ``(path in the tree, the reference's
    start as :func:`_shown` shows it)`` pairs, in file order. Kept as written, such a value would be
    used as it is: a token that is the text of its own name."""
    if isinstance(value, str):
        if "${" not in value:
            return []
        last = value.rfind("}") + 1  # as interpolate() reads it
        starts = {match.start() for match in _VAR.finditer(value[:last])}
        found = []
        index = value.find("${")
        while index != -1:
            if index not in starts:
                found.append((path, _shown(value, index)))
            index = value.find("${", index + 2)
        return found
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in malformed_references(item, (*path, key))
        ]
    if isinstance(value, list):
        return [
            found
            for index, item in enumerate(value)
            for found in malformed_references(item, (*path, index))
        ]
    return []


def _shown(value: str, index: int) -> str:
    """The ``${`` at ``index`` and the name after it, never what follows a ``:`` (a default
    may be a secret): ``${SLACK_TOKEN``, ``${TOKEN:…``, ``${1BAD}``."""
    head = value[index + 2 : index + 42]
    name = ""
    for character in head:
        if not (character.isalnum() or character in "_-."):
            break
        name += character
    rest = head[len(name) :]
    return "${" + name + ("}" if rest[:1] == "}" else ":…" if rest[:1] == ":" else "")


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):
        # only up to the last "}": a "${NAME:-" with no "}" after it never matches, and searching
        # past it would scan to the end again from every such start (quadratic)
        last = value.rfind("}") + 1
        head = _VAR.sub(lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value[:last])
        return head + value[last:]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        if isinstance(value, yamlsource.LineDict):
            out = yamlsource.LineDict(line=value.line)
            out.lines = value.lines
        for key, item in value.items():
            out[key] = interpolate(item, environ)
        return out
    if isinstance(value, list):
        out_list = yamlsource.LineList(line=getattr(value, "line", None))
        out_list.lines = list(getattr(value, "lines", []))
        out_list.extend(interpolate(item, environ) for item in value)
        return out_list
    return value
