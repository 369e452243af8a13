"""Email addresses as rulekit accepts them from anyone (a rule, a client's data, an agent):
one plain ``local@domain``, so an address can never add recipients or headers, nor hold a
character a screen acts on (a control, bidi or separator character), nor one that shows
nothing. Every space, Unicode's included (U+00A0, U+2003, U+3000 …), is refused: an SMTP
client refuses such an address on its command line, so an address taken here would fail every
attempt to send to it. Nor may it hold ``=?``, which opens an RFC 2047 encoded word: the mail
library decodes one in an address header (``=?utf-8?q?a=0D=0ABcc=3A_x?=@evil.example`` is a
line break and a Bcc), so such an address failed every attempt to build the message."""

from __future__ import annotations

from rulekit.safetext import INVISIBLE, UNSAFE

_NOT_IN_ADDRESSES = frozenset(',;:<>()[]"\\')


def address_problem(address: str) -> str | None:
    """Why ``address`` is not one plain ``local@domain`` address, or None."""
    if len(address) > 254:
        return "is over 254 characters"
    if any(_refused(c) for c in address):
        return 'holds spaces, control or invisible characters, or one of , ; : < > ( ) [ ] " \\'
    if "=?" in address:
        return "holds =? (an encoded word)"
    local, at, domain = address.rpartition("@")
    if not at or not local or "@" in local or "." not in domain.strip("."):
        return "is not local@domain"
    if domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return "has an invalid domain"
    return None


def ascii_domain(address: str) -> str:
    """``address`` with its domain as ASCII (A-labels, IDNA 2008 with UTS 46 mapping), as the
    ``email`` action sends it; as it is when the domain is ASCII already, or no valid
    internationalized name (a server with SMTPUTF8 may still take it)."""
    local, at, domain = address.rpartition("@")
    if domain.isascii():
        return address
    import idna

    try:
        return f"{local}{at}{idna.encode(domain, uts46=True).decode('ascii')}"
    except UnicodeError:  # (idna.IDNAError is one)
        return address


def _refused(char: str) -> bool:
    code = ord(char)
    return (
        code < 33
        or char.isspace()
        or code in UNSAFE
        or code in INVISIBLE
        or char in _NOT_IN_ADDRESSES
    )
