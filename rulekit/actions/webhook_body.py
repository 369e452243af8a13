"""What a ``webhook`` call sends: its body, how values are escaped in it, and its signature.

* ``body:`` — a YAML mapping sent as JSON. Every string in it is a template; a value rendered
  into a string stays inside that JSON string (the encoder escapes it), so no value can change
  the document's structure.
* ``text:`` + ``content_type:`` — a text sent as it is, with each interpolated value escaped for
  the content type: JSON string contents for a JSON type (one whose subtype names JSON: JSON
  Lines and JSON sequences too), percent-encoding for form data, HTML entities for ``*xml``
  and, where they land, for ``*html`` (as an email's HTML: a value in an unquoted attribute or
  an event handler is refused, a link it starts must be http, https or mailto), nothing for
  ``text/plain``; a text of any other type holds no values (:func:`takes_values`). In a JSON
  text a value must be inside a string (``"{{ ... }}"``); anywhere else it is refused.
* neither — :func:`event_document`: the event in a documented, versioned JSON shape.

Signing (:func:`signature`): ``X-Rulekit-Signature: sha256=<hex HMAC-SHA256 keyed with the
target's secret, over "<timestamp>.<delivery>.<body bytes>">`` with ``X-Rulekit-Timestamp:
<timestamp>`` and ``X-Rulekit-Delivery: <delivery>``. The delivery id is signed because
receivers de-duplicate on it: were it not, a request captured within the timestamp's tolerance
could be sent again under another delivery id and be taken as a new call.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from rulekit.actions.telegram_markup import resolve_html
from rulekit.errors import TemplateError
from rulekit.event import Event
from rulekit.expr.markup import Interpolations, Piece

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
"""Schemes a value may give a link in an HTML text (as in an email's HTML)."""

BODY_VERSION = 1
"""The version of the default body's shape: fields may be added within a version; a field is
removed, renamed or changes meaning only in a new version."""

EVENT_PARTS = ("conversation", "client", "message", "agent")


def event_document(event: Event) -> dict[str, Any]:
    """The default body: ``{"version": 1, "id", "channel", "event", "occurred_at", "origin",
    "recovered", "conversation", "client", "message", "agent"}`` (never the provider's raw
    payload)."""
    document: dict[str, Any] = {
        "version": BODY_VERSION,
        "id": event.id,
        "channel": event.channel,
        "event": event.event,
        "occurred_at": event.occurred_at.isoformat(),
        "origin": event.origin,
        "recovered": event.recovered,
    }
    if event.changed:  # an ``updated`` event: what changed (a field added within version 1)
        document["changed"] = event.changed
    for part in EVENT_PARTS:
        document[part] = getattr(event, part).model_dump(mode="json")
    return document


def encode_json(document: Any) -> bytes:
    """A JSON body: UTF-8, non-ASCII kept as it is, compact."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


# -- values in a text body ---------------------------------------------------------------------


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def text_escaper(content_type: str) -> Callable[[Interpolations, str], str] | None:
    """How values are put into a ``text`` of ``content_type`` (None: as they are)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if "json" in kind.partition("/")[2]:
        # JSON and the types made of JSON texts: *+json, JSON Lines (application/jsonl,
        # x-ndjson), JSON text sequences (json-seq), where a line break in a value would
        # start a record of its own
        return resolve_json_text
    if kind == "application/x-www-form-urlencoded":
        return lambda values, text: _each_value(values, text, quote_plus)
    if "html" in kind.partition("/")[2]:  # (application/xhtml+xml too)
        # read as HTML: a value in an unquoted attribute or an event handler is refused, a
        # link it starts must be a web or mail one (a receiver may show the page in a browser)
        return lambda values, text: resolve_html(values, text, LINK_SCHEMES)
    if kind.endswith("xml"):
        return lambda values, text: _each_value(values, text, _html)
    return None


def takes_values(content_type: str) -> bool:
    """Whether a ``text`` of ``content_type`` may hold values: one :func:`text_escaper` escapes
    them for, or plain text, which takes them as they are. Any other type (CSV, YAML,
    ``multipart/*``, ``message/*``...) has a structure rulekit has no escape for: a value could
    add a row, a key, a part or a header line of its own."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "text/plain" or text_escaper(content_type) is not None


def _html(text: str) -> str:
    return html.escape(text, quote=True)


def _each_value(values: Interpolations, text: str, escape: Callable[[str], str]) -> str:
    def scan(pieces: list[Piece]) -> str:
        return "".join(
            escape(values.plain(piece)) if isinstance(piece, int) else piece for piece in pieces
        )

    return values.resolve(text, scan)


def resolve_json_text(values: Interpolations, text: str) -> str:
    """A JSON text with each value escaped as JSON string contents; a value outside a string
    (where it could add keys or change types) is refused."""

    def scan(pieces: list[Piece]) -> str:
        out: list[str] = []
        in_string = escaped = False
        for piece in pieces:
            if isinstance(piece, int):
                if not in_string or escaped:
                    raise TemplateError(
                        'a value in a JSON text must be inside a string ("{{ ... }}"); '
                        "or use `body:`, which is always valid JSON"
                    )
                out.append(_json_string(values.plain(piece)))
                continue
            for char in piece:
                if escaped:
                    escaped = False
                elif char == "\\" and in_string:
                    escaped = True
                elif char == '"':
                    in_string = not in_string
            out.append(piece)
        return "".join(out)

    return values.resolve(text, scan)


# -- signing -----------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, delivery: str, body: bytes) -> str:
    """``sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<delivery>.<body>")>``."""
    signed = f"{timestamp}.{delivery}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def first_bytes(content: bytes, limit: int = 512) -> str:
    """The start of a response body, as text (for the audit)."""
    text = content[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(content) > limit else "")
