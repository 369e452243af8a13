"""Escaping values for where they land in a Slack message.

See :mod:`rulekit.expr.markup` for the two steps of rendering markup.

Slack mrkdwn gives meaning to ``&``, ``<`` and ``>`` only (``<https://x|label>`` links,
``<@U123>``, ``<!channel>`` mentions): in text and link labels a value gets those three as
entities; in a link's target ``|`` also becomes ``%7C``, and a link a value starts must be
http, https or mailto. Slack has no escape for ``*``, ``_``, ``~`` and backquotes: a value may
make text bold or code, never a link or a mention.

Which leaves of the parameters are mrkdwn: ``text``; in ``blocks``, the ``text`` of text objects
of type ``mrkdwn`` (section text and fields, context elements...), which get ``verbatim: true``
when a value is in them (else Slack would turn a value's plain ``@here`` or ``#general`` into a
mention or a link); in ``attachments``, ``text``,
``pretext``, ``fallback``, ``title``, ``footer``, ``author_name`` and the fields' ``title`` and
``value``. Link fields (``url``, ``image_url``, ``title_link``...) are checked as links; every
other leaf (``plain_text``, a button's ``value``, ids) gets values as they are.
"""

from __future__ import annotations

from typing import Any

from rulekit.escapes import escape_link_target, escape_mrkdwn
from rulekit.expr.markup import Interpolations, Piece, check_link, decoded

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
"""Schemes a value may give a link."""

URL_KEYS = frozenset(
    {
        "url", "image_url", "title_link", "author_link", "author_icon", "footer_icon",
        "thumb_url", "from_url", "original_url", "service_icon", "video_url", "thumbnail_url",
        "title_url", "author_icon_url",
    }
)  # fmt: skip
"""Keys of Block Kit and attachment objects whose value is a link."""

ATTACHMENT_TEXT = frozenset({"text", "pretext", "fallback", "title", "footer", "author_name"})
"""Attachment keys Slack reads as mrkdwn (links and mentions)."""

_MENTIONS = ("@", "#", "!")


def unescape_mrkdwn(text: str) -> str:
    """What Slack shows for mrkdwn text without links: its three entities decoded."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def resolve_mrkdwn(values: Interpolations, text: str) -> str:
    """``text`` (mrkdwn with placeholders) with each value escaped for its position."""
    return values.resolve(text, lambda pieces: _MrkdwnScan(values).run(pieces))


def resolve_link(values: Interpolations, text: str) -> str:
    """A leaf that is a link (a button's ``url``): values as they are, the scheme checked."""

    def scan(pieces: list[Piece]) -> str:
        parts = [
            (values.plain(piece), True) if isinstance(piece, int) else (piece, False)
            for piece in pieces
        ]
        check_link(parts, LINK_SCHEMES)
        return "".join(part for part, _ in parts)

    return values.resolve(text, scan)


_TEXT, _TARGET, _LABEL = range(3)


class _MrkdwnScan:
    def __init__(self, values: Interpolations) -> None:
        self.values = values
        self.state = _TEXT
        self.target: list[tuple[str, bool]] = []

    def run(self, pieces: list[Piece]) -> str:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, int):
                text = self.values.plain(piece)
                if self.state == _TARGET:
                    self.target.append((text, True))
                    out.append(escape_link_target(text))
                else:
                    out.append(escape_mrkdwn(text))
                continue
            self.literal(piece)
            out.append(piece)
        if self.state == _TARGET:
            self.end_target()
        return "".join(out)

    def literal(self, text: str) -> None:
        index = 0
        while index < len(text):
            if self.state != _TARGET:  # skip to what may change the state
                index = text.find("<" if self.state == _TEXT else ">", index)
                if index == -1:
                    return
            self.char(text[index])
            index += 1

    def char(self, char: str) -> None:
        if self.state == _TEXT:
            if char == "<":
                self.state, self.target = _TARGET, []
        elif self.state == _TARGET:
            if char in "|>":
                self.end_target()
                self.state = _LABEL if char == "|" else _TEXT
            else:
                self.target.append((char, False))
        elif char == ">":
            self.state = _TEXT

    def end_target(self) -> None:
        if not any(is_value for _, is_value in self.target):
            return  # the template's own link or mention
        first = self.target[0]
        if not (first[0].startswith(_MENTIONS) and not first[1]):
            check_link(decoded(self.target, unescape_mrkdwn), LINK_SCHEMES)


# the parameter tree ----------------------------------------------------------------------------


def escape_params(values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
    """Slack's parameters with every value escaped for where it landed."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "text" and isinstance(value, str):
            out[key] = resolve_mrkdwn(values, value)
        elif key == "blocks":
            out[key] = _block(values, value)
        elif key == "attachments" and isinstance(value, list):
            out[key] = [_attachment(values, item) for item in value]
        else:
            out[key] = _block(values, value)
    return out


def _block(values: Interpolations, node: Any, key: str = "") -> Any:
    """A Block Kit tree: mrkdwn where a text object says so, links checked, the rest plain."""
    if isinstance(node, str):
        return resolve_link(values, node) if key in URL_KEYS else values.plain_text(node)
    if isinstance(node, list):
        return [_block(values, item, key) for item in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    kind = values.plain_text(kind) if isinstance(kind, str) else kind
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name == "text" and kind == "mrkdwn" and isinstance(value, str):
            out[name] = resolve_mrkdwn(values, value)
            if values.has_values(value):
                out["verbatim"] = True  # no automatic parsing of a value's "@here", "#general"
        elif name != "verbatim" or "verbatim" not in out:
            out[name] = _block(values, value, name)
    return out


def _attachment(values: Interpolations, node: Any) -> Any:
    """A legacy attachment: its text fields and fields' titles and values are mrkdwn."""
    if not isinstance(node, dict):
        return _block(values, node)
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name in ATTACHMENT_TEXT and isinstance(value, str):
            out[name] = resolve_mrkdwn(values, value)
        elif name == "fields" and isinstance(value, list):
            out[name] = [_field(values, field) for field in value]
        else:
            out[name] = _block(values, value, name)
    return out


def _field(values: Interpolations, node: Any) -> Any:
    if not isinstance(node, dict):
        return _block(values, node)
    return {
        name: resolve_mrkdwn(values, value)
        if name in ("title", "value") and isinstance(value, str)
        else _block(values, value, name)
        for name, value in node.items()
    }
