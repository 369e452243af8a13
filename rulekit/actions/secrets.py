"""Keeping credentials out of messages: every error text an action builds passes :func:`redact`."""

from __future__ import annotations

from collections.abc import Iterable

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


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its distinctive parts) replaced by ``***``."""
    for secret in secrets:
        for part in secret_parts(secret):
            text = text.replace(part, MASK)
    return text
