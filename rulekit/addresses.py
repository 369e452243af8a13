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


_MALFORMED = (
    "is not Name <local@domain>: text after the address, an address as the name or an open "
    'bracket (quote a name holding any of , ; : < > @ ( ) as "...")'
)


def mailbox(text: str) -> tuple[str, str]:
    """The display name and the address of ``text``, one mailbox (``Name <local@domain>``,
    ``<local@domain>`` or ``local@domain``) read as a mail program reads a From header;
    ValueError saying why it is not one: several addresses (a name with an unquoted comma is
    two), a group, text after the address, an address written as the name, a bracket left open,
    or an address :func:`address_problem` refuses."""
    import email.policy
    from email.errors import InvalidHeaderDefect

    if "@" not in text:
        raise ValueError("needs an address (Name <local@domain>)")
    try:
        parsed = email.policy.default.header_factory("From", text)
        found = parsed.addresses
        groups = parsed.groups
    except (AttributeError, IndexError, KeyError, TypeError):
        # the mail library's parser fails on some malformed headers ('+.:<8@a.example')
        raise ValueError(_MALFORMED) from None
    if len(found) != 1:
        name, bracket, _ = text.partition("<")
        name = name.strip()
        quote = f' (quote the name ("{name}" <...>): a comma ends one)' if bracket else ""
        raise ValueError(f"is one address; this has {len(found)}{quote}")
    if groups[0].display_name is not None:
        raise ValueError("is one address, not a group (Team: a@b.example;)")
    if any(isinstance(defect, InvalidHeaderDefect) for defect in parsed.defects):
        raise ValueError(_MALFORMED)
    name, address = found[0].display_name, found[0].addr_spec
    if text.count("(") > name.count("("):
        # a comment: dropped when the mailbox is written anew, shown or not by mail programs
        raise ValueError(
            "holds a comment in parentheses, which mail programs show differently or not at "
            'all: put it in the quoted name ("Shop (EU)" <local@domain>)'
        )
    problem = address_problem(address)
    if problem:
        raise ValueError(f"needs an address (Name <local@domain>); it {problem}")
    return name, address


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
