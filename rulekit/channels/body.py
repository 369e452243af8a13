"""Webhook bodies: the one place that decides which JSON rulekit accepts, and what providers see.

Every webhook goes through :func:`load` when it arrives (ingest answers 400 with its message
when it raises) and providers are handed :func:`for_providers` of the stored body, so every
provider reads the same, safe data whatever JSON parser it uses:

* UTF-8 only; a leading byte order mark is ignored (RFC 8259 allows either);
* **lone surrogates** (``"\\ud800"`` written as an escape: valid JSON, but not text that can be
  encoded, stored or printed) are replaced with U+FFFD in every string, keys of objects
  included. The inbox keeps the exact bytes received, for audit. A person's request (the
  console's API) is refused instead (``refuse_surrogates``): they can send it again;
* refused (400): ``NaN``/``Infinity`` literals (not JSON), a number out of range (a float that
  would be infinite, an integer of more than :data:`MAX_INT_DIGITS` digits), the same key twice
  in one object (readers would disagree on which value counts), nesting deeper than
  :data:`MAX_DEPTH`, a list or an object of more than :data:`MAX_ITEMS` items, and a top level
  that is not an object or an array.

Everything here is linear in the size of the body.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in a webhook body."""
MAX_INT_DIGITS = 100
"""Most digits an integer in a webhook body may have."""
MAX_ITEMS = 1000
"""Most items a list, or keys an object, in a webhook body may have. What one webhook makes the
daemon do grows with them (an event and its jobs for each message of a list, recorded in one
transaction while the store waits): 13,000 messages in one body held up every other
webhook's acknowledgement for seconds."""
MAX_KEY_CHARS = 200
"""Longest id or key stored as it is (databases index them, PostgreSQL up to ~2700 bytes a
row); a longer one is stored as its SHA-256 digest."""

EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
"""The times a webhook may tell (when a message was written, a visit began); one outside them
is taken as unknown (:func:`bounded_time`)."""

BOM = "\ufeff"
_BOM_BYTES = BOM.encode()
REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
# a \u escape of a surrogate (paired or not); raw surrogates cannot occur in valid UTF-8
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyError(ValueError):
    """A body no provider can ever accept; the message says why, for the sender (a 400).
    ``quoted``: what of the body the message quotes (a key), which logs hide unless content
    may be logged."""

    def __init__(self, message: str, *, quoted: str | None = None) -> None:
        super().__init__(message)
        self.quoted = quoted


def load(body: bytes, *, refuse_surrogates: bool = False) -> Any:
    """Decode a webhook body under the rules above; raise :class:`BodyError` when it breaks one
    (with ``refuse_surrogates``, when a string holds a lone surrogate too)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("the body is not UTF-8") from None
    if text.startswith(BOM):
        text = text[1:]
    if not text or text.isspace():
        raise BodyError("the body is empty")
    surrogates = _ESCAPED_SURROGATE.search(body) is not None
    decoder = _CLEANING if surrogates and not refuse_surrogates else _DECODER
    try:
        data = decoder.decode(text)
    except RecursionError:
        raise BodyError(f"the body is nested too deeply (over {MAX_DEPTH} levels)") from None
    except BodyError:
        raise
    except ValueError as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict | list):
        raise BodyError(f"the body must be a JSON object or array, not {_kind(data)}")
    if (
        surrogates
        or body.count(b"{") + body.count(b"[") > MAX_DEPTH
        or body.count(b",") >= MAX_ITEMS
    ):
        # else it cannot be nested too deeply nor hold too many items: nothing to walk for
        _walk(data, surrogates, refuse=refuse_surrogates)
    return data


def for_providers(body: bytes) -> bytes:
    """The body as providers are handed it: ``body`` itself when it is clean (the usual case),
    else re-encoded JSON without the byte order mark and with lone surrogates replaced.

    A body :func:`load` refuses is returned unchanged (the provider reports it).
    """
    if not body.startswith(_BOM_BYTES) and (
        b"\\" not in body  # (no escape at all, as most services write: no search needed)
        or _ESCAPED_SURROGATE.search(body) is None
    ):
        return body
    try:
        data = load(body)
    except BodyError:
        return body
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def clean_text(value: str) -> str:
    """``value`` with lone surrogates replaced by U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, value)


def bounded_key(key: object) -> str | None:
    """An id or key fit to store and index: text without surrogates or NUL (PostgreSQL's text
    cannot hold it; both become U+FFFD), at most :data:`MAX_KEY_CHARS` long (a longer one
    becomes ``sha256:<hex digest>``, still the same for the same input); None for anything that
    is not a non-empty string."""
    if not isinstance(key, str) or not key:
        return None
    if not key.isascii():  # (ASCII holds no surrogate: the usual id needs no search)
        key = clean_text(key)
    if "\x00" in key:
        key = key.replace("\x00", REPLACEMENT)
    if len(key) > MAX_KEY_CHARS:
        return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def bounded_time(value: datetime | None) -> datetime | None:
    """A time read from a webhook, fit to compute with: ``value`` when it lies between
    :data:`EARLIEST_TIME` and :data:`LATEST_TIME` (naive means UTC), else None (unknown). A
    time near the end of what ``datetime`` holds (the year 9999) breaks every sum made with
    it later: a timer due 5 minutes after it, a conversation's idle deadline."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value if EARLIEST_TIME <= aware <= LATEST_TIME else None


def _refuse_constant(name: str) -> Any:
    raise BodyError(f"the body is not valid JSON: {name} is not a JSON value")


def _integer(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise BodyError(f"the body has an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        shown = literal if len(literal) <= 20 else literal[:20] + "..."
        raise BodyError(f"the body has a number out of range: {shown}")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        _refuse_duplicate(pairs)
    return data


def _clean_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return _object([(clean_text(key), value) for key, value in pairs])


# made once (``json.loads`` with hooks makes a decoder and its scanner per call)
_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant,
    parse_int=_integer,
    parse_float=_float,
    object_pairs_hook=_object,
)
_CLEANING = json.JSONDecoder(
    parse_constant=_refuse_constant,
    parse_int=_integer,
    parse_float=_float,
    object_pairs_hook=_clean_object,
)


def _refuse_duplicate(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise BodyError(f"the body has the key {shown!r} twice in one object", quoted=shown)
        seen.add(key)


def _walk(data: dict[str, Any] | list[Any], clean: bool, *, refuse: bool = False) -> None:
    """Check the depth and the sizes of ``data`` and, when ``clean``, replace lone surrogates
    in its strings (with ``refuse``: raise :class:`BodyError` at the first one), without
    recursion: a body's depth never costs stack."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyError(f"the body is nested too deeply (over {MAX_DEPTH} levels)")
        if len(node) > MAX_ITEMS:
            kind = (
                "an object of more than {} keys"
                if isinstance(node, dict)
                else "a list of more than {} items"
            )
            raise BodyError("the body has " + kind.format(MAX_ITEMS))
        entries = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(entries) if clean else entries:
            if refuse and clean and _lone_surrogate(key, value):
                raise BodyError(
                    "the body has a lone surrogate (a \\ud800 to \\udfff escape without its "
                    "pair): it is not text"
                )
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))
            elif clean and isinstance(value, str):
                node[key] = clean_text(value)


def _lone_surrogate(key: object, value: object) -> bool:
    return any(isinstance(text, str) and _SURROGATE.search(text) for text in (key, value))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"
