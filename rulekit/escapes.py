"""How a value is escaped for each markup rulekit writes: HTML, Telegram's MarkdownV2, Slack's
mrkdwn. Pure string functions, in linear time, with no knowledge of the actions that use them.

The actions that write markup escape interpolated values with them (``actions/*_markup.py``),
and ``rulekit forget`` looks for every escaped form of a client's data with :data:`ESCAPERS`
(``store/forms.py``): one list, so a new escaping cannot be forgotten by the other.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_MDV2_SPECIAL = re.compile(r"([_*\[\]()~`>#+\-=|{}.!\\])")
_MDV2_CODE_SPECIAL = re.compile(r"([`\\])")
_MDV2_URL_SPECIAL = re.compile(r"([)\\])")


def escape_html(text: str) -> str:
    """A value for HTML (Telegram's too), in text or in a quoted attribute value."""
    return html.escape(text, quote=True)


def escape_markdown_v2(text: str) -> str:
    """A value for MarkdownV2 text: every special character escaped."""
    return _MDV2_SPECIAL.sub(r"\\\1", text)


def escape_markdown_v2_code(text: str) -> str:
    """A value inside MarkdownV2 code or pre: only ``\\`` and backquotes escaped."""
    return _MDV2_CODE_SPECIAL.sub(r"\\\1", text)


def escape_markdown_v2_url(text: str) -> str:
    """A value inside a MarkdownV2 link's ``(url)``: only ``)`` and ``\\`` escaped."""
    return _MDV2_URL_SPECIAL.sub(r"\\\1", text)


def escape_mrkdwn(text: str) -> str:
    """Escape the three characters mrkdwn gives meaning to (``&``, ``<``, ``>``), so a value
    like ``<!channel>`` is shown, not obeyed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_link_target(text: str) -> str:
    """A value in an mrkdwn link's target (before ``|``): mrkdwn's three, and ``|`` as ``%7C``."""
    return escape_mrkdwn(text).replace("|", "%7C")


ESCAPERS: tuple[Callable[[str], str], ...] = (
    escape_html,
    escape_markdown_v2,
    escape_markdown_v2_code,
    escape_markdown_v2_url,
    escape_mrkdwn,
    escape_link_target,
)
"""Every escaping above: the forms in which an action may have stored a value."""
