"""Every form in which a personal value may have been stored, and finding them in text.

A client's name rarely reaches the store only as typed: a Telegram HTML message holds it
HTML-escaped (``O&#x27;Brien &lt;ob@x.io&gt;``), a MarkdownV2 one backslash-escaped
(``ob@x\\.io``), a Slack text mrkdwn-escaped (``&amp;``), a JSON body quoted in an error
``\\u00e9``- or ``\\/``-escaped, a page URL percent-encoded (``ob%40x.io``), a rule may have
upper-cased it. :func:`stored_forms` lists those forms (each escaping applied to the whole
value; every escaping here works character by character, so the escaped form of a text quoting
the value contains the escaped value); :class:`PersonalValues` looks for any of them in a
string, case-insensitively. ``rulekit forget`` erases strings holding one, ``rulekit why``
hides them.

What is not recognised: a value cut or rewritten by a template beyond escaping and case
(``{{ client.name[:3] }}``, a truncated long message).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any
from urllib.parse import quote, quote_plus

import markupsafe

from rulekit.escapes import ESCAPERS
from rulekit.safetext import replace_folded

MIN_VALUE_LENGTH = 3
"""Shorter values are not looked for in other strings: "Al" would erase half the trace."""

_URL_SAFE = ("", "/", "!'()*-._~", ";,/?:@&=+$#!'()*-._~")
"""Characters left as they are by the URL encoders in use: Python's ``quote`` (with and without
``/``), JavaScript's ``encodeURIComponent`` and ``encodeURI``."""


@cache
def _markups() -> tuple[Callable[[str], str], ...]:
    """How a value is escaped for each markup a destination reads and each place in it (the
    escapers of :mod:`rulekit.escapes`), plus the HTML escapings of earlier versions and of
    Jinja."""
    return (
        str,
        *ESCAPERS,
        lambda text: html.escape(text, quote=False),
        lambda text: str(markupsafe.escape(text)),
    )


def _transports(text: str) -> set[str]:
    """``text`` as JSON string contents (ASCII-only or not, ``/`` escaped or not) and as a
    Python ``repr`` quotes it."""
    forms = {text, repr(text)[1:-1]}
    for ascii_only in (True, False):
        encoded = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
        forms.update((encoded, encoded.replace("/", "\\/")))
    return forms


def _url_forms(text: str) -> set[str]:
    forms = set()
    for safe in _URL_SAFE:
        forms.add(quote(text, safe=safe))
        forms.add(quote_plus(text, safe=safe))
    return forms


def stored_forms(value: str) -> set[str]:
    """The forms of ``value`` that may be stored: raw, escaped for each markup, JSON-escaped,
    repr-quoted, URL-encoded, and the markup or JSON forms of those."""
    forms: set[str] = set()
    urls = _url_forms(value)
    for markup in _markups():
        forms.update(_transports(markup(value)))
        for url in urls:
            forms.update(_transports(markup(url)))
    return forms


class PersonalValues:
    """A set of personal values, with every stored form of each (see :func:`stored_forms`).

    ``found_in(text)`` tells whether a string holds one (any form, any case); ``replace_in``
    hides them in place. Values shorter than :data:`MIN_VALUE_LENGTH` are
    left out."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = frozenset(
            text for text in (value.strip() for value in values) if len(text) >= MIN_VALUE_LENGTH
        )
        forms = {form for value in self.values for form in stored_forms(value)}
        self._folded = tuple(
            sorted({form.casefold() for form in forms if form}, key=len, reverse=True)
        )

    def __bool__(self) -> bool:
        return bool(self.values)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds a form of one of the values, in any case."""
        folded = text.casefold()
        return any(form in folded for form in self._folded)

    def is_value(self, text: str) -> bool:
        """Whether ``text`` is one of the values as it is (a number's digits: not every
        number holding them)."""
        return text in self.values

    def replace_in(self, text: str, replacement: str) -> str:
        """``text`` with every form of every value, in any case, replaced by ``replacement``.
        Linear in the length of ``text`` for each form (``str.find``; a regex alternation of
        the forms retries each of them at every position, quadratic in a long value)."""
        return replace_folded(text, self._folded, replacement)


SHOWN_CLIENT_FIELDS = ("id", "name", "display_name")
"""The client fields shown without ``--show-content`` (in audit output and the daemon's log);
every other one is hidden."""


def hidden_values(data: Mapping[str, Any], *related: Mapping[str, Any]) -> PersonalValues:
    """The values of an event (``Event.public()``) that audit output and the daemon's log hide,
    with their stored forms: the message text, the conversation's page and every client field
    but the shown ones; also those of ``related`` events whose content the output may quote (a
    timer's reason is written when it fires, about the conversation and client as they were
    then)."""
    values: list[str] = []
    for one in (data, *related):
        client = one.get("client") or {}
        if isinstance(client, Mapping):
            for name, value in client.items():
                if name not in SHOWN_CLIENT_FIELDS:
                    values.extend(strings_in(value))
        values.extend(strings_in((one.get("message") or {}).get("text")))
        values.extend(strings_in((one.get("conversation") or {}).get("page")))
    return PersonalValues(values)


def strings_in(value: Any) -> Iterable[str]:
    """Every string in JSON data (keys excepted)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
