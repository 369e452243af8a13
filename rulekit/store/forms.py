"""Every form in which a personal value may have been stored, and finding them in text.

A client's name rarely reaches the store only as typed: a Telegram HTML message holds it
HTML-escaped (``O&#x27;Brien &lt;ob@x.io&gt;``), a MarkdownV2 one backslash-escaped
(``ob@x\\.io``), a Slack text mrkdwn-escaped (``&amp;``), a JSON body quoted in an error
``\\u00e9``- or ``\\/``-escaped, a page URL percent-encoded (``ob%40x.io``), a rule may have
upper-cased it, a Slack, Telegram or email message holds it without bidi controls, an email
sent to an address whose domain is outside ASCII names the domain by its A-labels
(``xn--bcher-kva.example``).
:func:`stored_forms` lists those forms (each escaping applied to the whole
value; every escaping here works character by character, so the escaped form of a text quoting
the value contains the escaped value); :class:`PersonalValues` looks for any of them in a
string, case-insensitively. ``rulekit forget`` erases strings holding one, ``rulekit why``
hides them.

A value longer than :data:`NEEDLE_CHARS` is looked for by its beginning: a record quoting a
long message often holds only that (a service's error cut to a few hundred characters), and the
forms of a whole message of megabytes took seconds and gigabytes to build, on the daemon's event
loop when a job of its event failed.

What is not recognised: a value cut or rewritten by a template beyond escaping and case
(``{{ client.name[:3] }}``, a long message quoted from its middle).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import Any
from urllib.parse import quote, quote_plus

import markupsafe

from rulekit.addresses import ascii_domain
from rulekit.escapes import ESCAPERS
from rulekit.safetext import replace_folded, without_bidi_controls

MIN_VALUE_LENGTH = 3
"""Shorter values are not looked for in other strings: "Al" would erase half the trace."""

NEEDLE_CHARS = 100
"""How much of a longer value is looked for (its forms built): its beginning."""

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
    # repr quotes a text holding both quotes with ' (escaping it), another as it can: the
    # beginning of a value may be written either way
    forms = {text, repr(text)[1:-1], repr(text + "'\"")[1:-4]}
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
    repr-quoted, URL-encoded, and the markup or JSON forms of those; of the value as typed and
    as a message people read holds it, without bidi controls (if still long enough to look
    for), and of an email address as it is sent, its domain in A-labels."""
    forms: set[str] = set()
    shown = without_bidi_controls(value)
    texts = {value, shown} if len(shown) >= MIN_VALUE_LENGTH else {value}
    if "@" in value and not value.isascii():
        # an email address whose domain is outside ASCII is sent (and its outcome recorded)
        # with the domain's A-labels: ``zoë@bücher.example`` as ``zoë@xn--bcher-kva.example``
        texts |= {ascii_domain(text) for text in texts}
    for text in texts:
        urls = _url_forms(text)
        for markup in _markups():
            forms.update(_transports(markup(text)))
            for url in urls:
                forms.update(_transports(markup(url)))
    return forms


class PersonalValues:
    """A set of personal values, with every stored form of each (see :func:`stored_forms`;
    of a value longer than :data:`NEEDLE_CHARS`, of its beginning).

    ``found_in(text)`` tells whether a string holds one (any form, any case); ``replace_in``
    hides them in place. Values shorter than :data:`MIN_VALUE_LENGTH` are
    left out."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = frozenset(
            text for text in (value.strip() for value in values) if len(text) >= MIN_VALUE_LENGTH
        )
        self._folded = _folded_forms(v for v in self.values if len(v) <= NEEDLE_CHARS)
        self._heads = _folded_forms(v[:NEEDLE_CHARS] for v in self.values if len(v) > NEEDLE_CHARS)
        """The forms of the beginnings of the long values."""

    def __bool__(self) -> bool:
        return bool(self.values)

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds a form of one of the values (of a long one, of its
        beginning), in any case."""
        folded = text.casefold()
        return any(form in folded for form in self._folded) or any(
            form in folded for form in self._heads
        )

    def is_value(self, text: str) -> bool:
        """Whether ``text`` is one of the values as it is (a number's digits: not every
        number holding them)."""
        return text in self.values

    def replace_in(self, text: str, replacement: str) -> str:
        """``text`` with every form of every value, in any case, replaced by ``replacement``.
        Linear in the length of ``text`` for each form (``str.find``; a regex alternation of
        the forms retries each of them at every position, quadratic in a long value). From
        the beginning of a long value on, the rest of ``text`` is replaced too: what follows
        it there is likely more of it (a quote cut at its end)."""
        if self._heads and _CUT in text:  # (never so: then the beginnings alone)
            return replace_folded(text, self._folded + self._heads, replacement)
        if self._heads:
            marked = replace_folded(text, self._heads, _CUT)
            if _CUT in marked:
                head, _, _ = marked.partition(_CUT)
                return replace_folded(head, self._folded, replacement) + replacement
        return replace_folded(text, self._folded, replacement)


_CUT = "\x00\ufffe\x00"
"""Where :meth:`PersonalValues.replace_in` cuts a text (no text it is given holds it)."""


def _folded_forms(values: Iterable[str]) -> tuple[str, ...]:
    """The case-folded stored forms of ``values``, longest first."""
    forms = {form for value in values for form in stored_forms(value)}
    return tuple(sorted({form.casefold() for form in forms if form}, key=len, reverse=True))


SHOWN_CLIENT_FIELDS = ("id", "name", "display_name")
"""The client fields shown without ``--show-content`` (in audit output and the daemon's log);
every other one is hidden."""


def hidden_values(data: Mapping[str, Any], *related: Mapping[str, Any]) -> PersonalValues:
    """The values of an event (``Event.public()``) that audit output and the daemon's log hide,
    with their stored forms: the message text, the conversation's page and every client field
    but the shown ones; also those of ``related`` events whose content the output may quote (a
    timer's reason is written when it fires, about the conversation and client as they were
    then)."""
    return PersonalValues(_hidden_strings(data, *related))


def _hidden_strings(*events: Mapping[str, Any]) -> list[str]:
    values: list[str] = []
    for one in events:
        client = one.get("client") or {}
        if isinstance(client, Mapping):
            for name, value in client.items():
                if value is None or name in SHOWN_CLIENT_FIELDS:
                    continue
                if isinstance(value, str):
                    values.append(value)  # (most are: without a generator of their own)
                else:
                    values.extend(strings_in(value))
        values.extend(strings_in((one.get("message") or {}).get("text")))
        values.extend(strings_in((one.get("conversation") or {}).get("page")))
    return values


def hidden_if_quoted(texts: Iterable[str], data: Mapping[str, Any]) -> PersonalValues | None:
    """:func:`hidden_values` of ``data`` when one of ``texts`` holds one of them as it is (in
    any case), else None. Only substrings are looked for: the stored forms, which take
    milliseconds to build, are built for a text that quotes the client (a destination a rule
    rendered from their data), not for every line that might."""
    folded = [text.casefold() for text in texts if text]
    for value in _hidden_strings(data):
        needle = value.strip()[:NEEDLE_CHARS].casefold()
        if len(needle) >= MIN_VALUE_LENGTH and any(needle in text for text in folded):
            return hidden_values(data)
    return None


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
