"""Keeping credentials out of messages: every error text an action builds passes :func:`redact`.

A service quoting what it received rarely quotes it as sent: a JSON answer escapes ``/`` as
``\\/`` (PHP does by default), an error echoes the URL percent-encoded, or with ``+`` for
spaces. So each secret is hidden in each of those forms too (:func:`secret_forms`), in any
letter case (``%2f`` or ``%2F``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from rulekit.safetext import replace_folded

MASK = "***"


def secret_parts(secret: str | None) -> list[str]:
    """What to hide for ``secret``: itself and, for ``id:secret`` tokens (Telegram), the part
    after the colon (it may show up alone, e.g. percent-encoded URLs split at the colon)."""
    if not secret:
        return []
    parts = [secret]
    _, colon, tail = secret.partition(":")
    if colon and len(tail) >= 8:
        parts.append(tail)
    return parts


def secret_forms(secret: str | None) -> set[str]:
    """Each part of ``secret`` (:func:`secret_parts`) as sent, percent-encoded (``/`` kept or
    not, ``+`` for spaces) and, each of those, as JSON string contents (ASCII-only or not,
    ``/`` escaped or not)."""
    forms: set[str] = set()
    for part in secret_parts(secret):
        for text in {part, quote(part, safe=""), quote(part, safe="/"), quote_plus(part, safe="")}:
            for ascii_only in (True, False):
                encoded = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
                forms.update((text, encoded, encoded.replace("/", "\\/")))
    return forms


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its distinctive parts), in every form of
    :func:`secret_forms` and any letter case, replaced by ``***``."""
    forms = {form.casefold() for secret in secrets for form in secret_forms(secret) if form}
    if not forms or not text:
        return text
    return replace_folded(text, sorted(forms, key=len, reverse=True), MASK)
