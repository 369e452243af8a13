"""Hosts a URL names: whether one is this machine (where plain ``http://`` stays on it)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine: ``localhost`` and its
    subdomains (RFC 6761), 127.0.0.0/8, ::1."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
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
