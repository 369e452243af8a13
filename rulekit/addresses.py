"""Email addresses as rulekit accepts them from anyone (a rule, a client's data, an agent):
one plain ``local@domain``, so an address can never add recipients or headers, nor hold a
character a screen acts on (a control, bidi or separator character)."""

from __future__ import annotations

from rulekit.safetext import UNSAFE

_NOT_IN_ADDRESSES = frozenset(' ,;:<>()[]"\\')


def address_problem(address: str) -> str | None:
    """Why ``address`` is not one plain ``local@domain`` address, or None."""
    if len(address) > 254:
        return "is over 254 characters"
    if any(ord(c) < 33 or ord(c) in UNSAFE or c in _NOT_IN_ADDRESSES for c in address):
        return 'holds spaces, control characters or one of , ; : < > ( ) [ ] " \\'
    local, at, domain = address.rpartition("@")
    if not at or not local or "@" in local or "." not in domain.strip("."):
        return "is not local@domain"
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "has an invalid domain"
    return None
