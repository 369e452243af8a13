"""Tracebacks that show where an error happened, not what it said.

An exception's message may quote what a client sent (a message text, an email) or a secret:
``KeyError('anna@example.com')``, a validation error listing the input, a driver's error
repeating a row. When the log may not show content, a traceback keeps, for each exception of
the chain (causes, contexts, the members of an exception group), its type and every frame's
file, line, function and source line, and each message (with its notes) is ``[hidden]``.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator

HIDDEN = "[hidden]"

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_MAX_CHAIN = 50
_MAX_GROUP = 15
_MAX_DEPTH = 10


def hidden_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as :func:`traceback.format_exception` writes it, with each
    exception's message and notes (and a ``SyntaxError``'s quoted text) replaced by
    :data:`HIDDEN`; without the final newline, as :meth:`logging.Formatter.formatException`."""
    return "".join(_chain(exc, set(), 0)).rstrip("\n")


def hidden_message(exc: BaseException) -> str:
    """``exc`` as a log line may quote it when content may not be logged: its type, and its
    message :data:`HIDDEN` (``asyncpg.exceptions.UniqueViolationError: [hidden]``)."""
    return f"{type_name(type(exc))}: {HIDDEN}"


def _chain(exc: BaseException, seen: set[int], depth: int) -> Iterator[str]:
    """The blocks of ``exc``'s chain, the oldest first, each joined to the next as Python does."""
    chain: list[tuple[BaseException, str]] = []
    current: BaseException | None = exc
    joint = ""
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.append((current, joint))
        if current.__cause__ is not None:
            current, joint = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, joint = current.__context__, _CONTEXT
        else:
            current = None
    for one, joint in reversed(chain):
        yield from _block(one, seen, depth)
        if joint:
            yield joint


def _block(exc: BaseException, seen: set[int], depth: int) -> Iterator[str]:
    group = isinstance(exc, BaseExceptionGroup)
    if exc.__traceback__ is not None:
        yield f"{'Exception Group ' if group else ''}Traceback (most recent call last):\n"
        yield from traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__)).format()
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        yield f'  File "{exc.filename or "<string>"}", line {exc.lineno}\n'
    yield f"{type_name(type(exc))}: {HIDDEN}\n"
    if isinstance(exc, BaseExceptionGroup):
        if depth >= _MAX_DEPTH:
            yield f"... (max_group_depth is {_MAX_DEPTH})\n"
            return
        for number, member in enumerate(exc.exceptions[:_MAX_GROUP], 1):
            yield f"+---------------- {number} ----------------\n"
            for text in _chain(member, seen, depth + 1):
                yield from ("| " + line for line in text.splitlines(keepends=True))
        if len(exc.exceptions) > _MAX_GROUP:
            more = len(exc.exceptions) - _MAX_GROUP
            yield f"+---------------- ... ----------------\n| and {more} more exceptions\n"


def type_name(kind: type[BaseException]) -> str:
    """The name a traceback gives an exception class (with its module, unless a builtin)."""
    name, module = kind.__qualname__, kind.__module__
    return name if module in ("__main__", "builtins") else f"{module}.{name}"
