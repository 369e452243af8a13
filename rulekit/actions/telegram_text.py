"""Fitting a message into Telegram's 4096-character limit without breaking its markup.

Telegram rejects a longer ``sendMessage``; rulekit truncates instead, and marks the cut with
``…``. The cut never falls inside an HTML tag or entity, inside a MarkdownV2 escape (``\\.``), a
link or a custom emoji, nor between a character and what joins it (a mark, a zero-width
joiner, a variation selector), nor inside a flag (a pair of regional indicators); entities
open at the cut are closed after the ellipsis (``</b>``, ``*``), so the result parses as the
original would have.

Lengths are counted in UTF-16 code units, as Telegram counts them, and on the text as sent
(markup included): a text that fits is sent unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

MAX_MESSAGE_LENGTH = 4096
ELLIPSIS = "…"

_HTML_TOKEN = re.compile(r"<[^<>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);", re.S)
_TAG_NAME = re.compile(r"</?\s*([A-Za-z][A-Za-z0-9-]*)")
# tags whose content cannot be cut (a custom emoji must keep its one emoji)
_HTML_ATOMIC = frozenset({"tg-emoji"})
_MDV2_MARKERS = ("```", "||", "__", "`", "_", "*", "~")

Token = tuple[str, str | None]
"""A piece of the text, and what must follow the ellipsis if the text is cut right after it
(``None``: no cut there)."""


def utf16_len(text: str) -> int:
    """The length Telegram counts: UTF-16 code units (an emoji may count two; a lone
    surrogate, which a template's ``\\ud800`` escape makes, one)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def truncate(text: str, parse_mode: str | None = None, limit: int = MAX_MESSAGE_LENGTH) -> str:
    """``text`` if it fits in ``limit``; else its longest prefix that keeps the markup of
    ``parse_mode`` (None or ``"none"``, ``"HTML"``, ``"MarkdownV2"``) valid, plus ``…`` and
    the closing of every entity still open."""
    if utf16_len(text) <= limit:
        return text
    if parse_mode == "HTML":
        tokens = _html_tokens(text)
    elif parse_mode == "MarkdownV2":
        tokens = _markdown_v2_tokens(text)
    else:
        tokens = plain_tokens(text)
    return cut_tokens(tokens, limit)


def cut_tokens(tokens: Iterator[Token], limit: int) -> str:
    """The longest prefix of ``tokens`` that ends where a cut may fall and fits in ``limit``
    (UTF-16 units) with ``…`` and the closers that cut needs after it."""
    budget = limit - utf16_len(ELLIPSIS)
    kept: list[str] = []
    best_count, best_closers = 0, ""
    used = 0
    for piece, closers in tokens:
        used += utf16_len(piece)
        if used > budget:
            break
        kept.append(piece)
        if closers is not None and used + utf16_len(closers) <= budget:
            best_count, best_closers = len(kept), closers
    return "".join(kept[:best_count]) + ELLIPSIS + best_closers


def _joins(char: str) -> bool:
    """Whether ``char`` belongs to the character before it (no cut may separate them): any
    mark, not only those with a combining class (a Devanagari vowel sign, a keycap's U+20E3
    have none), a joiner, a skin tone, a tag."""
    return (
        unicodedata.category(char).startswith("M")
        or char in "\u200d\ufe0e\ufe0f"
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin tone modifiers
        or "\U000e0020" <= char <= "\U000e007f"  # tag sequences (flags of regions)
    )


def _is_regional_indicator(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


MAX_FLAG_RUN = 256
"""How far back a run of regional indicators is counted to pair them into flags (a longer
run, which no flag text has, may be cut inside a flag; the count stays linear)."""


def can_cut_before(text: str, index: int) -> bool:
    """Whether a cut before ``text[index]`` keeps every character whole (a mark, a joined
    emoji, a flag stay with what they belong to)."""
    if index >= len(text):
        return True
    if _joins(text[index]):
        return False
    if index > 0 and text[index - 1] == "\u200d":
        return False
    if _is_regional_indicator(text[index]):
        # a flag is two regional indicators: 🇩🇪 cut after 🇩 shows a lone letter D
        run = 0
        while run < MAX_FLAG_RUN and index - run > 0:
            if not _is_regional_indicator(text[index - run - 1]):
                break
            run += 1
        return run % 2 == 0
    return True


def plain_tokens(text: str) -> Iterator[Token]:
    """``text`` without markup, as tokens: a cut may fall between any whole characters."""
    for index, char in enumerate(text):
        yield char, ("" if can_cut_before(text, index + 1) else None)


# HTML -------------------------------------------------------------------------------------------


def _html_tokens(text: str) -> Iterator[Token]:
    stack: list[str] = []
    index = 0
    while index < len(text):
        match = _HTML_TOKEN.match(text, index)
        if match and match.group().startswith("<"):
            piece = match.group()
            _html_tag(piece, stack)
        elif match:
            piece = match.group()  # an entity: whole or not at all
        else:
            piece = text[index]
        index += len(piece)
        cut_here = can_cut_before(text, index) and not _HTML_ATOMIC.intersection(stack)
        yield piece, ("".join(f"</{name}>" for name in reversed(stack)) if cut_here else None)


def _html_tag(tag: str, stack: list[str]) -> None:
    name_match = _TAG_NAME.match(tag)
    if name_match is None or tag.endswith("/>"):
        return
    name = name_match.group(1).lower()
    if tag.startswith("</"):
        if name in stack:
            del stack[len(stack) - 1 - stack[::-1].index(name) :]
    else:
        stack.append(name)


# MarkdownV2 -------------------------------------------------------------------------------------


def _markdown_v2_tokens(text: str) -> Iterator[Token]:
    stack: list[str] = []  # open markers; "[" while inside a link's text
    index = 0
    pre_header = False  # between an opening ``` and the end of its line (the language)
    line = 0  # where the line being read starts
    while index < len(text):
        code = stack[-1] if stack and stack[-1] in ("`", "```") else None
        char = text[index]
        if char == "\\":
            piece = text[index : index + 2]  # an escape is one piece; a lone "\" at the end too
        elif code is not None:
            piece = code if text.startswith(code, index) else char
            if piece == code:
                stack.pop()
                pre_header = False
            elif char == "\n":
                pre_header = False
        elif char == "]" and "[" in stack and text.startswith("](", index):
            end = _link_end(text, index + 2)
            piece = text[index:end]
            del stack[len(stack) - 1 - stack[::-1].index("[") :]
        elif char == "[" or text.startswith("![", index):
            piece = "![" if char == "!" else "["
            stack.append("[")
        else:
            piece = next((m for m in _MDV2_MARKERS if text.startswith(m, index)), char)
            if piece == "||" and "||" not in stack and _ends_quote(text, line, index + 2):
                pass  # the mark of an expandable block quotation (**>...||), no spoiler
            elif piece in _MDV2_MARKERS:
                if piece in stack:
                    del stack[len(stack) - 1 - stack[::-1].index(piece) :]
                else:
                    stack.append(piece)
                    pre_header = piece == "```"
        if "\n" in piece:
            line = index + piece.rindex("\n") + 1
        index += len(piece)
        cut_here = (
            "[" not in stack
            and not pre_header
            and piece != "\\"  # a dangling backslash at the very end
            and can_cut_before(text, index)
        )
        yield piece, (_markdown_v2_closers(stack) if cut_here else None)


def _ends_quote(text: str, line: int, after: int) -> bool:
    """Whether a ``||`` ending at ``after`` ends a block quotation's line (``line`` is where
    that line starts): there, it marks the quotation expandable, and opens no spoiler."""
    at_end = after == len(text) or text[after] == "\n"
    return at_end and text.startswith((">", "**>"), line)


def _link_end(text: str, index: int) -> int:
    """The index after a link's ``(url)``, whose ``)`` and ``\\`` are escaped."""
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == ")":
            return index + 1
        index += 1
    return len(text)


def _markdown_v2_closers(stack: list[str]) -> str:
    out = ""
    for marker in reversed(stack):
        # "_" then "__" would read as "___"; Telegram ignores "\r" there (as its docs advise)
        if out.endswith("_") and marker.startswith("_"):
            out += "\r"
        out += marker
    return out
