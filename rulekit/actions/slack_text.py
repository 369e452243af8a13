"""Fitting a Slack message into Slack's length limits without breaking its markup.

Slack cuts a message's ``text`` past 40,000 characters itself (wherever it falls: inside a
link or an entity), and refuses a whole message (``invalid_blocks``) whose Block Kit text is
over its limit: 3,000 characters for a text object (a section's text, a context element), 2,000
for a section's field, 150 for a header, 75 for a button's or an option's label, 12,000 for a
``markdown`` block, 2,000 for an image's ``alt_text`` and ``title``. A client's long message put
into a section would cost the whole alert. rulekit cuts each such text to its limit instead,
marking the cut with ``…``: never inside a link or mention (``<https://x|label>``, ``<@U1>``),
an entity (``&amp;``), nor a character and what joins it (see
:func:`~rulekit.actions.telegram_text.can_cut_before`); a code block (`````) open at the cut is
closed after the ellipsis. Lengths are counted in UTF-16 code units on the text as sent (at
least as many as the characters Slack counts), so a text that fits is sent unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rulekit.actions.telegram_text import (
    Token,
    can_cut_before,
    cut_tokens,
    plain_tokens,
    utf16_len,
)

MAX_TEXT = 40_000
"""Characters of a message's ``text`` Slack keeps."""
MAX_TEXT_OBJECT = 3_000
"""Characters of a Block Kit text object, unless :data:`TEXT_OBJECT_LIMITS` says less."""
TEXT_OBJECT_LIMITS = {
    ("header", "text"): 150,
    ("section", "fields"): 2_000,
    ("button", "text"): 75,
    ("option", "text"): 75,
    ("option", "description"): 75,
    ("image", "title"): 2_000,
}
"""Limits of text objects by (the type of the object holding them, the key they are under)."""
STRING_LIMITS = {
    ("markdown", "text"): 12_000,
    ("image", "alt_text"): 2_000,
}
"""Limits of texts that are strings (not text objects), by (object type, key)."""
_MARKUP_STRINGS = frozenset({("markdown", "text")})
_OPTION_KEYS = frozenset({"options", "initial_option", "initial_options"})
_ENTITIES = ("&amp;", "&lt;", "&gt;")


def fit_text(text: str, limit: int = MAX_TEXT, *, markup: bool = True) -> str:
    """``text`` if it fits in ``limit``; else its longest prefix that keeps its mrkdwn links,
    mentions and entities whole (``markup``), plus ``…``."""
    if utf16_len(text) <= limit:
        return text
    return cut_tokens(_mrkdwn_tokens(text) if markup else plain_tokens(text), limit)


def fit_blocks(node: Any, kind: str = "", key: str = "") -> Any:
    """Block Kit blocks (or any part of them) with every text cut to its limit."""
    if isinstance(node, list):
        return [fit_blocks(item, kind, key) for item in node]
    if not isinstance(node, dict):
        return node
    own = node.get("type")
    text = node.get("text")
    if own in ("plain_text", "mrkdwn") and isinstance(text, str):
        limit = TEXT_OBJECT_LIMITS.get((kind, key), MAX_TEXT_OBJECT)
        return {**node, "text": fit_text(text, limit, markup=own == "mrkdwn")}
    if not isinstance(own, str):
        own = "option" if key in _OPTION_KEYS else kind
    out: dict[str, Any] = {}
    for name, value in node.items():
        most = STRING_LIMITS.get((own, name))
        if most is not None and isinstance(value, str):
            out[name] = fit_text(value, most, markup=(own, name) in _MARKUP_STRINGS)
        else:
            out[name] = fit_blocks(value, own, name)
    return out


def _mrkdwn_tokens(text: str) -> Iterator[Token]:
    """``text`` as tokens: a link or mention (``<...>``, no ``<`` inside) and an entity are one
    token each; a cut inside a code block closes it."""
    index, length = 0, len(text)
    close = -1  # the next ">" at or after index (length: none)
    code = False
    while index < length:
        char = text[index]
        piece = char
        if char == "<":
            if close < index:
                found = text.find(">", index)
                close = length if found == -1 else found
            if close < length and text.find("<", index + 1, close) == -1:
                piece = text[index : close + 1]
        elif char == "&":
            piece = next((e for e in _ENTITIES if text.startswith(e, index)), char)
        elif char == "`" and text.startswith("```", index):
            piece, code = "```", not code
        index += len(piece)
        yield piece, (("```" if code else "") if can_cut_before(text, index) else None)
