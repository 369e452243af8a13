"""Hosts a URL or a setting names: whether one is this machine (where plain ``http://``
stays on it), and whether a configured host is a name or an address at all."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine: ``localhost`` (any letter
    case), 127.0.0.0/8, ::1. Not ``localhost.`` nor a name under it (``crm.localhost``):
    though RFC 6761 reserves them, the system's resolver finds only ``localhost`` itself in
    /etc/hosts and asks DNS for the others, which may answer with any machine's address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_host(url: str) -> str | None:
    """The host ``url`` reaches over plain ``http://`` elsewhere than this machine (what it
    sends travels unencrypted), or None (``https://``, loopback, or not a URL)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or not host or is_loopback(host):
        return None
    return host


def host_problem(host: str) -> str | None:
    """Why ``host`` (a setting naming a server) is neither an IP address nor a DNS name that
    every client rulekit connects with takes, or None. Refused: a port, a scheme, spaces, an
    empty label, a label beginning or ending with ``-``, a malformed ``xn--`` label, a name
    outside ASCII that IDNA 2008 does not take, and other spellings of an IPv4 address
    (``2130706433``, ``0x7f.0.0.1``, ``127.1``: resolvers read them as addresses, readers as
    names)."""
    if "://" in host:
        return "is a name or an address, not a URL"
    if host.startswith("[") and host.endswith("]"):
        return "is an address without brackets"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host.count(":") == 1:
        return "is a name or an address: the port goes in `port`"
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if labels[-1].isascii() and labels[-1].isdigit():
        return "is not an IP address (write one as four decimal numbers: 192.0.2.1)"
    if not name.isascii():  # encoded whole, as the HTTP client does (no "_" in any label)
        import idna

        try:
            name = idna.encode(name.lower()).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            return "is not a host name (an internationalized name IDNA 2008 does not take)"
        labels = name.split(".")
    if len(name) > 253 or not all(_is_label(label) for label in labels):
        return "is not a host name (letters, digits and hyphens in dot-separated labels)"
    return None


_LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _is_label(label: str) -> bool:
    import idna

    try:
        if label[:4].lower() == "xn--":
            idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        return False
    return (
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(c in _LABEL_CHARACTERS for c in label)
    )


def ascii_host(host: str) -> str:
    """``host`` as looked up and as TLS checks it: an address as it is, a name in lower-case
    A-labels as IDNA 2008 writes it (UTS 46 mapping, no transitional forms). Python's own
    codec is IDNA 2003, which writes ``straße.example`` as ``strasse.example``: another
    domain, which someone else may own. As it is when no such form exists."""
    if host.isascii():
        return host
    import idna

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return host
