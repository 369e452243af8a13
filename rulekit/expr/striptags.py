"""Jinja's ``striptags`` filter (markupsafe's ``Markup.striptags``), in pieces of bounded size.

markupsafe removes comments and tags, collapses whitespace with ``" ".join(text.split())`` and
unescapes entities, each step over the whole text: a 4 MB message became a million words in a
list, 67 MiB, before the result's size was checked. Its result can be short, so a long text is
not refused; here the text goes through the same three steps a few thousand characters at a
time, and the result is refused as soon as it passes the value limit.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from rulekit.expr.budget import limits, too_big

_CHUNK = 8_192
"""Characters of kept text collapsed and unescaped at a time."""
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
"""A character reference, as :func:`html.unescape` finds them (none holds an ``&`` after its
first character: a text cut just before an ``&`` is unescaped in two parts alike)."""
_NAME_REACH = 34
"""At most this many characters from its ``&`` decide a named reference."""


def _kept(text: str) -> Iterator[str]:
    """The text outside comments and tags, as markupsafe finds them (an unclosed one keeps
    the rest), joined in pieces of about :data:`_CHUNK` characters."""
    pieces: list[str] = []
    size = pos = 0
    while (start := text.find("<", pos)) != -1:
        if text.startswith("<!--", start):
            end = text.find("-->", start + 4)
            end = -1 if end == -1 else end + 3
        else:
            end = text.find(">", start)
            end = -1 if end == -1 else end + 1
        if end == -1:
            break
        if start > pos:
            pieces.append(text[pos:start])
            size += start - pos
            if size >= _CHUNK:
                yield "".join(pieces)
                pieces, size = [], 0
        pos = end
    yield "".join(pieces)
    for at in range(pos, len(text), _CHUNK):
        yield text[at : at + _CHUNK]


def _collapsed(pieces: Iterator[str]) -> Iterator[str]:
    """``" ".join(text.split())`` of the pieces put together."""
    started = spaced = False
    for piece in pieces:
        words = piece.split()
        if not words:
            spaced = spaced or bool(piece)
            continue
        joined = " ".join(words)
        yield " " + joined if started and (spaced or piece[0].isspace()) else joined
        started, spaced = True, piece[-1].isspace()


def _charref(match: re.Match[str]) -> str:
    ref = match.group()
    if ref[1] != "#":
        return html.unescape(ref)  # at most 34 characters
    # a number of any length, without converting it all (``int`` refuses 4,300 digits)
    prefix = "&#x" if ref[2] in "xX" else "&#"
    digits = ref[len(prefix) :].rstrip(";").lstrip("0") or "0"
    if len(digits) > 8:
        digits = "99999999"  # past the last code point in either base: U+FFFD
    return html.unescape(f"{prefix}{digits};")


def _open_number(text: str, amp: int) -> str | None:
    """The reference at ``text[amp:]`` shortened, if it is a number the next text may go on
    (``&#12`` or ``&#x``), else None."""
    prefix = "&#x" if text.startswith(("&#x", "&#X"), amp) else "&#"
    if not text.startswith(prefix[:2], amp):
        return None
    digits = text[amp + len(prefix) :]
    if digits.strip("0123456789abcdefABCDEF" if prefix == "&#x" else "0123456789"):
        return None
    if digits:
        digits = digits.lstrip("0") or "0"
        digits = digits if len(digits) <= 8 else "99999999"
    return text[amp : amp + len(prefix)] + digits


def _unescaped(pieces: Iterator[str]) -> Iterator[str]:
    """:func:`html.unescape` of the pieces put together; a reference the next piece may
    finish is kept for it."""
    carry = ""
    for piece in pieces:
        text = carry + piece
        carry = ""
        amp = text.rfind("&")
        if amp != -1:
            opened = _open_number(text, amp)
            if opened is not None:
                text, carry = text[:amp], opened
            elif len(text) - amp <= _NAME_REACH:
                text, carry = text[:amp], text[amp:]
        yield _CHARREF.sub(_charref, text)
    yield _CHARREF.sub(_charref, carry)


def striptags(value: Any, most: int | None = None) -> str:
    """markupsafe's ``Markup(value).striptags()``: comments and tags removed, whitespace
    collapsed to single spaces, entities unescaped. With ``most``, a result longer than that
    is refused (:class:`~rulekit.expr.budget.OverBudget`) before it is all made.

    A decimal reference of over 4,300 digits gives U+FFFD, where markupsafe raises
    ``ValueError`` (Python's limit on converting such a number)."""
    if hasattr(value, "__html__"):
        value = value.__html__()
    out: list[str] = []
    size = 0
    for piece in _unescaped(_collapsed(_kept(str(value)))):
        size += len(piece)
        if most is not None and size > most:
            raise too_big("'striptags'")
        out.append(piece)
    return "".join(out)


def striptags_filter(value: Any) -> str:
    """The sandbox's ``striptags``: its result within the value limit."""
    return striptags(value, limits().value)
