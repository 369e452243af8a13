"""Turning pydantic's validation errors into one-line, located messages a person can act on."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from rulekit import yamlsource
from rulekit.errors import did_you_mean


def dotted(path: tuple[Any, ...]) -> str:
    """``("do", 0, "slack", "text")`` → ``do[0].slack.text``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[BaseModel] | None, path: tuple[Any, ...]) -> list[str]:
    """Keys of the model found by following ``path`` from ``model`` (best effort): as they
    are written in a file, ``if`` and ``from`` rather than the fields ``if_`` and ``sender``."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or current is None:
            continue
        fields = _written(current)
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
    return [key for key, info in _written(current).items() if not info.exclude]


def _written(model: Any) -> dict[str, Any]:
    """A model's fields by the key a file writes for each (its alias, if it has one)."""
    fields = getattr(model, "model_fields", None) or {}
    return {info.alias or name: info for name, info in fields.items()}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def pydantic_errors(
    exc: ValidationError,
    tree: Any,
    model: type[BaseModel] | None,
    prefix: tuple[Any, ...] = (),
) -> Iterator[tuple[tuple[int | None, str], str]]:
    """Yield ``((line, field_path), message)`` for each error in ``exc``.

    ``tree`` is the YAML data (with line numbers) the model was validated from, found at
    ``prefix`` inside it. Unknown keys get a "did you mean" from the model's own field names.
    Input values are never repeated in messages: they may be secrets.
    """
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        full = prefix + loc
        line = yamlsource.line_of(tree, full)
        kind = error["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            choices = _fields_at(model, loc[:-1])
            hint = did_you_mean(key, choices)
            known = f"; allowed: {', '.join(choices)}" if choices and not hint else ""
            message = f"unknown field {key!r}{hint}{known}"
        elif kind == "missing":
            message = f"missing required field {str(loc[-1])!r}" if loc else "missing value"
        else:
            message = error["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            if kind == "string_type":
                message += _unquoted(tree, full)
        yield (line, dotted(full)), message


def _unquoted(tree: Any, path: tuple[Any, ...]) -> str:
    """Why a value written as text is not text, when YAML made it something else: ``12:30``
    (a number in base 60), ``2026-12-24`` (a date), ``true``, ``1e3``."""
    value = tree
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return ""
    names = {bool: "true or false", int: "a number", float: "a number"}
    name = names.get(type(value)) or ("a date" if isinstance(value, datetime.date) else None)
    return f" (YAML reads it as {name}: put it in quotes)" if name else ""


def _is_union_tag(part: Any) -> bool:
    # pydantic adds the member type's name to locations inside unions, e.g. "function-after[...]"
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "bool", "list[str]"})
