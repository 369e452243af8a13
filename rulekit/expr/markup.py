"""Values interpolated into markup, escaped for the exact place they land.

An action that sends markup (Slack mrkdwn, Telegram HTML or MarkdownV2) has its parameters
rendered in two steps:

1. every template renders with each ``{{ }}`` value replaced by a *placeholder*; the value itself
   is kept aside in this render's :class:`Interpolations` (a random nonce in each placeholder:
   neither client data nor the template's text can forge one);
2. the action says which markup each rendered string leaf of the parameter tree is, and the
   leaf is read as that markup — the template's literal text, the admin's markup — while each
   placeholder is replaced by its value escaped for the position it is in: text, a quoted
   attribute, code, a link target. A value in a position where no escaping can make it safe
   (an HTML tag name, an unquoted attribute) is refused, as is a link target whose scheme a
   value decides unless it is one the target allows (http, https, ...).

A value the template marks ``|safe`` is not a value: it is :class:`Safe` markup and stays in the
text, read as the admin's markup. A value that is already HTML markup (``|e``, ``|tojson``, a
:class:`markupsafe.Markup`) is kept as markup by HTML targets and turned back into text for the
others; nothing is escaped twice.
"""

from __future__ import annotations

import contextvars
import html
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from rulekit.errors import TemplateError
from rulekit.expr.budget import OverBudget
from rulekit.safetext import without_bidi_controls

_START, _END = "\ufdd0", "\ufdd1"  # Unicode noncharacters: never meaningful text
_PLACEHOLDER = re.compile(_START + "([0-9a-f]{16})([0-9]+)" + _END)
"""Any render's placeholder (compiled once): a render takes only those with its own nonce."""

Piece = str | int
"""A piece of a rendered leaf: literal text (the admin's), or the index of a value."""


class Safe(str):
    """Text the template marked ``|safe``: the admin vouches that it is markup for the target.

    Any operation on it (``~``, ``+``, ``replace``...) gives plain text again, which is escaped:
    only the marked value itself is taken as markup."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def mark_safe(value: Any) -> Safe:
    """The ``safe`` filter."""
    return Safe("" if value is None else str(value))


@dataclass
class _Value:
    text: str
    is_html: bool  # already HTML markup (|e, |tojson): HTML targets keep it as it is


class Interpolations:
    """The values of one render, each standing in the rendered text as a placeholder."""

    def __init__(self, limit: int, *, bidi_controls: bool = True) -> None:
        self.limit = limit
        self.bidi_controls = bidi_controls
        """Whether values keep their bidi control characters (else they are removed: see
        :func:`interpolations`)."""
        self._nonce = secrets.token_hex(8)
        self._marker = _START + self._nonce
        self._values: list[_Value] = []
        self._plain: dict[int, str] = {}
        self._sizes: dict[int, int] = {}

    def placeholder(self, value: Any) -> str:
        """Keep ``value`` aside and return what stands for it in the rendered text."""
        if isinstance(value, Safe):
            return str(value)
        is_html = isinstance(value, Markup) or hasattr(value, "__html__")
        text = str(value.__html__()) if is_html else str(value)
        self._values.append(_Value(text, is_html))
        return f"{self._marker}{len(self._values) - 1}{_END}"

    def split(self, text: str, below: int | None = None) -> list[Piece]:
        """``text`` as literal pieces and value indexes (only indexes under ``below``)."""
        if self._marker not in text:
            return [text]
        pieces: list[Piece] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            if match.group(1) != self._nonce:  # not this render's: text like any other
                continue
            index = int(match.group(2))
            if below is not None and index >= below:
                continue
            if match.start() > position:
                pieces.append(text[position : match.start()])
            pieces.append(index)
            position = match.end()
        if position < len(text):
            pieces.append(text[position:])
        return pieces

    def has_values(self, text: str) -> bool:
        return self._marker in text

    def plain(self, index: int) -> str:
        """Value ``index`` as plain text (values inside it, from a captured block, included)."""
        cached = self._plain.get(index)
        if cached is not None:
            return cached
        self._check_size(self._size(index))
        value = self._values[index]
        out: list[str] = []
        for piece in self.split(value.text, below=index):
            if isinstance(piece, int):
                out.append(self.plain(piece))
            else:
                out.append(html.unescape(piece) if value.is_html else piece)
        text = self._shown(self._checked("".join(out)))
        self._plain[index] = text
        return text

    def html(self, index: int, escape: Callable[[str], str]) -> str:
        """Value ``index`` as HTML: markup as it is, text escaped with ``escape``."""
        value = self._values[index]
        if not value.is_html:
            return escape(self.plain(index))
        out = [
            self.html(piece, escape) if isinstance(piece, int) else self._shown(piece)
            for piece in self.split(value.text, below=index)
        ]
        return self._checked("".join(out))

    def is_html(self, index: int) -> bool:
        return self._values[index].is_html

    def plain_text(self, text: str) -> str:
        """A leaf that is not markup: every value as it is."""
        return self.resolve(text, lambda pieces: "".join(_plain_pieces(self, pieces)))

    def resolve(self, text: str, scan: Callable[[list[Piece]], str]) -> str:
        """``text`` with its values put in by ``scan`` (which reads the pieces as markup)."""
        if not self.has_values(text):
            return text
        pieces = self.split(text)
        self._check_size(sum(self._size(p) if isinstance(p, int) else len(p) for p in pieces))
        return self._checked(scan(pieces))

    def _size(self, index: int) -> int:
        """The length of value ``index`` as plain text, or more (an escape is never shorter
        than the character it stands for): known *before* the text is built, so that values
        holding values cannot build past the limit first and check after."""
        size = self._sizes.get(index)
        if size is None:
            size = 0
            for piece in self.split(self._values[index].text, below=index):
                size += self._size(piece) if isinstance(piece, int) else len(piece)
                if size > self.limit:
                    break
            self._sizes[index] = size
        return size

    def _shown(self, text: str) -> str:
        """A value's ``text`` as it goes in: without bidi controls unless they are kept (only
        ever shorter: the sizes known before building hold)."""
        return text if self.bidi_controls else without_bidi_controls(text)

    def _check_size(self, size: int) -> None:
        if size > self.limit:
            raise OverBudget(f"output larger than {self.limit} characters")

    def _checked(self, text: str) -> str:
        self._check_size(len(text))
        return text


def _plain_pieces(values: Interpolations, pieces: list[Piece]) -> Iterator[str]:
    for piece in pieces:
        yield values.plain(piece) if isinstance(piece, int) else piece


_current: contextvars.ContextVar[Interpolations | None] = contextvars.ContextVar(
    "rulekit_interpolations", default=None
)


@contextmanager
def interpolations(limit: int, *, bidi_controls: bool = True) -> Iterator[Interpolations]:
    """The table the renders inside the ``with`` put their values in; without
    ``bidi_controls``, each value loses its bidi control characters (for messages people read:
    a client's name holding an override would reorder the text around it)."""
    table = Interpolations(limit, bidi_controls=bidi_controls)
    token = _current.set(table)
    try:
        yield table
    finally:
        _current.reset(token)


def defer(value: Any) -> str:
    """The escaper of markup targets' templates: a placeholder now, escaping once the place of
    the value in the markup is known (see :mod:`rulekit.expr.markup`)."""
    table = _current.get()
    if table is None:
        raise RuntimeError(
            "a markup template was rendered outside rulekit.expr.markup.interpolations"
        )
    return table.placeholder(value)


def map_leaves(tree: Any, leaf: Callable[[str], str]) -> Any:
    """``tree`` (dicts, lists, strings...) with every string leaf replaced by ``leaf(string)``."""
    if isinstance(tree, str):
        return leaf(tree)
    if isinstance(tree, dict):
        return {key: map_leaves(value, leaf) for key, value in tree.items()}
    if isinstance(tree, list):
        return [map_leaves(value, leaf) for value in tree]
    return tree


# -- link targets ----------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_IGNORED_IN_URLS = re.compile(r"[\x00-\x20\x7f]")


def check_link(parts: list[tuple[str, bool]], schemes: frozenset[str]) -> None:
    """Refuse a link target that a value (``True`` parts) makes start with a scheme outside
    ``schemes`` (or with none): ``javascript:``, ``data:``, ``evil.example``... A target whose
    scheme is in the template's own text is left alone.

    Browsers ignore tabs, newlines and leading controls in URLs (``java\\tscript:``), so they
    are ignored here too before the scheme is read."""
    if not any(is_value for _, is_value in parts):
        return
    prefix = ""
    for text, is_value in parts:
        if is_value:
            break
        prefix += text
    if _SCHEME.match(_IGNORED_IN_URLS.sub("", prefix)):
        return  # the template's own text says what kind of link it is
    url = _IGNORED_IN_URLS.sub("", "".join(text for text, _ in parts))
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme in schemes:
        where = url[match.end() :].lstrip("/").lower() if match else ""
        if scheme == "tg" and (where == "user" or where.startswith(("user?", "user/", "user#"))):
            # a mention: it notifies the user it names, as Slack's <@U123> would
            raise TemplateError(
                "a value would make a Telegram mention (tg://user); only the template's own "
                "text may mention someone"
            )
        return
    shown = f"a {scheme!r} URL" if scheme else "a URL without a scheme"
    allowed = ", ".join(sorted(schemes))
    raise TemplateError(
        f"a value would make a link target {shown}; values may only make {allowed} links"
    )


def decoded(parts: list[tuple[str, bool]], decode: Callable[[str], str]) -> list[tuple[str, bool]]:
    """Link ``parts`` with each run of literal text decoded from the markup (entities,
    escapes); values are plain text already."""
    out: list[tuple[str, bool]] = []
    run: list[str] = []
    for text, is_value in parts:
        if is_value:
            if run:
                out.append((decode("".join(run)), False))
                run = []
            out.append((text, True))
        else:
            run.append(text)
    if run:
        out.append((decode("".join(run)), False))
    return out
