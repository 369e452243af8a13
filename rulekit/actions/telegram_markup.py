"""Escaping values for where they land in Telegram's HTML and MarkdownV2 (see
:mod:`rulekit.expr.markup` for the two steps of rendering markup).

HTML: in text (``<b>``, ``<code>``, ``<pre>`` included) and in quoted attribute values, ``&``,
``<``, ``>``, ``"`` and ``'`` become entities; a link (``href``, ``src``, ``action``,
``formaction``) a value starts must be http, https or tg (email and webhooks pass their own
schemes); a value in a tag name, an attribute name, an unquoted attribute value or an event
handler (``onclick``...) is refused.

MarkdownV2, read the way Telegram reads it: in text every special character
(``_*[]()~`>#+-=|{}.!\\``) gets a backslash; inside code and pre only ``\\`` and a backquote; in
a link's ``(url)`` only ``)`` and ``\\``, and a link a value starts must be http, https or tg.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from rulekit.errors import TemplateError
from rulekit.escapes import (
    escape_html,
    escape_markdown_v2,
    escape_markdown_v2_code,
    escape_markdown_v2_url,
)
from rulekit.expr.markup import Interpolations, Piece, check_link, decoded

LINK_SCHEMES = frozenset({"http", "https", "tg"})
"""Schemes a value may give a link (Telegram's own ``tg:`` links, and the web's)."""
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction"})
"""Attributes whose value a browser follows or loads: a link target a value starts is
checked (``javascript:`` runs as script from any of them)."""

# HTML ------------------------------------------------------------------------------------------

_TEXT, _TAG, _IN_TAG, _NAME, _AFTER_NAME, _BEFORE_VALUE, _QUOTED, _UNQUOTED = range(8)


def resolve_html(values: Interpolations, text: str, schemes: frozenset[str] = LINK_SCHEMES) -> str:
    """``text`` (HTML with placeholders) with each value escaped for its position; a link a
    value starts must have one of ``schemes`` (Telegram's by default; email and webhooks pass
    their own)."""
    return values.resolve(text, lambda pieces: _HtmlScan(values, schemes).run(pieces))


class _HtmlScan:
    def __init__(self, values: Interpolations, schemes: frozenset[str] = LINK_SCHEMES) -> None:
        self.values = values
        self.schemes = schemes
        self.state = _TEXT
        self.name = ""  # the current attribute's name
        self.quote = ""
        self.link: list[tuple[str, bool]] | None = None  # an href's parts, for check_link

    def run(self, pieces: list[Piece]) -> str:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, int):
                out.append(self.value(piece))
            else:
                self.literal(piece)
                out.append(piece)
        return "".join(out)

    def value(self, index: int) -> str:
        if self.state == _TEXT:
            return self.values.html(index, escape_html)
        if self.state != _QUOTED:
            raise TemplateError(
                'a value inside an HTML tag must be in a quoted attribute value (name="...")'
            )
        if self.name.startswith("on"):
            # an event handler: the browser decodes the entities, then runs the text as script
            raise TemplateError(
                f"a value in an event handler attribute ({self.name}=...) would run as script"
            )
        if self.link is not None:
            self.link.append((self.values.plain(index), True))
        markup = self.values.html(index, escape_html)
        return markup.replace('"', "&quot;").replace("'", "&#x27;")

    def literal(self, text: str) -> None:
        index = 0
        while index < len(text):
            # skip what cannot change the state (text up to a tag, an attribute to its quote)
            if self.state == _TEXT:
                index = text.find("<", index)
            elif self.state == _QUOTED and self.link is None:
                index = text.find(self.quote, index)
            if index == -1:
                return
            self.char(text[index])
            index += 1

    def char(self, char: str) -> None:
        state, space = self.state, char.isspace()
        if state == _TEXT:
            if char == "<":
                self.state = _TAG
        elif state == _TAG:
            if char == ">":
                self.state = _TEXT
            elif space:
                self.state = _IN_TAG
        elif state in (_IN_TAG, _AFTER_NAME):
            if char == ">":
                self.state = _TEXT
            elif char == "=" and state == _AFTER_NAME:
                self.state = _BEFORE_VALUE
            elif not space and char != "/":
                self.state, self.name = _NAME, char.lower()
        elif state == _NAME:
            if char == ">":
                self.state = _TEXT
            elif char == "=":
                self.state = _BEFORE_VALUE
            elif space:
                self.state = _AFTER_NAME
            else:
                self.name += char.lower()
        elif state == _BEFORE_VALUE:
            if char == ">":
                self.state = _TEXT
            elif char in "\"'":
                self.state, self.quote = _QUOTED, char
                self.link = [] if self.name in URL_ATTRIBUTES else None
            elif not space:
                self.state = _UNQUOTED
        elif state == _QUOTED:
            if char == self.quote:
                if self.link is not None:
                    check_link(decoded(self.link, html.unescape), self.schemes)
                self.state, self.link = _IN_TAG, None
            elif self.link is not None:
                self.link.append((char, False))
        elif state == _UNQUOTED:
            if char == ">":
                self.state = _TEXT
            elif space:
                self.state = _IN_TAG


# MarkdownV2 ------------------------------------------------------------------------------------

_NORMAL, _CODE, _PRE, _URL = range(4)
_ESCAPERS: dict[int, Callable[[str], str]] = {
    _NORMAL: escape_markdown_v2,
    _CODE: escape_markdown_v2_code,
    _PRE: escape_markdown_v2_code,
    _URL: escape_markdown_v2_url,
}


_STOPS = {
    _NORMAL: re.compile(r"[\\`\[(]"),
    _CODE: re.compile(r"[\\`]"),
    _PRE: re.compile(r"[\\`]"),
    _URL: re.compile(r"[\\)]"),
}
"""The characters that may change each state (the others are skipped at once)."""


def resolve_markdown_v2(values: Interpolations, text: str) -> str:
    """``text`` (MarkdownV2 with placeholders) with each value escaped for its position."""
    return values.resolve(text, lambda pieces: _MarkdownV2Scan(values).run(pieces))


def _escapable(char: str) -> bool:
    """Telegram takes ``\\`` as an escape before characters 1 to 126 only."""
    return 0 < ord(char) <= 126


class _MarkdownV2Scan:
    def __init__(self, values: Interpolations) -> None:
        self.values = values
        self.state = _NORMAL
        self.links = 0  # link texts open ("[" seen, "](" not yet)
        self.pending = False  # the text so far ends with a "\" that escapes what follows
        self.previous = ""  # the last literal character (for "](" and "```")
        self.link: list[tuple[str, bool]] = []  # the url's parts, for check_link

    def run(self, pieces: list[Piece]) -> str:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, int):
                out.append(self.value(piece))
                self.previous = ""
            else:
                self.literal(piece)
                out.append(piece)
        if self.state == _URL:
            check_link(self.link, LINK_SCHEMES)
        return "".join(out)

    def value(self, index: int) -> str:
        text = self.values.plain(index)
        if self.state == _URL:
            self.link.append((text, True))
        escape = _ESCAPERS[self.state]
        if self.pending and text:
            # the template's "\" escapes the value's first character: that one stays as it is
            self.pending = False
            first = text[0]
            if _escapable(first):
                return first + escape(text[1:])
        return escape(text)

    def literal(self, text: str) -> None:
        index = 0
        while index < len(text):
            if not self.pending:
                # skip what cannot change the state
                match = _STOPS[self.state].search(text, index)
                stop = match.start() if match else len(text)
                if stop > index:
                    if self.state == _URL:
                        self.link.append((text[index:stop], False))
                    self.previous, index = text[stop - 1], stop
                    continue
            index = self.char(text, index)

    def char(self, text: str, index: int) -> int:
        """Read the character at ``index``; return the index of the next one to read."""
        char, state = text[index], self.state
        if self.pending:
            self.pending = False
            if _escapable(char):
                if state == _URL:
                    self.link.append((char, False))
                self.previous = ""
                return index + 1
        if char == "\\":
            self.pending = True
            return index + 1
        if state == _URL:
            if char == ")":
                check_link(self.link, LINK_SCHEMES)
                self.state, self.link = _NORMAL, []
            else:
                self.link.append((char, False))
        elif state in (_CODE, _PRE):
            marker = "```" if state == _PRE else "`"
            if text.startswith(marker, index):
                self.state, self.previous = _NORMAL, ""
                return index + len(marker)
        elif text.startswith("```", index):
            self.state, self.previous = _PRE, ""
            return index + 3
        elif char == "`":
            self.state = _CODE
        elif char == "[":
            self.links += 1
        elif char == "(" and self.previous == "]" and self.links:
            self.links -= 1
            self.state, self.link = _URL, []
        self.previous = char
        return index + 1
