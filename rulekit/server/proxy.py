"""Requests through a reverse proxy: the client's address, scheme and host as the proxy saw
them, taken from ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` only when
the connection comes from a proxy the daemon trusts (loopback, and ``server.trusted_proxies``).

Anyone can send these headers; only a trusted proxy's are believed. ``X-Forwarded-For`` lists
the addresses a request passed through, each proxy appending the one it received it from; the
client is the right-most address that is not a trusted proxy (the addresses left of it were
written by the client itself and are ignored).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK = ("127.0.0.0/8", "::1/128")
FORWARDED_HOST = "rulekit.forwarded_host"
"""The scope key holding the host a trusted proxy received the request for, if it said."""
MAX_HOPS = 32
"""The most ``X-Forwarded-For`` entries read, from the right."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from an ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:5``, ``[::1]:5``)."""
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_LOOPBACK = tuple(ipaddress.ip_network(network) for network in LOOPBACK)


def from_this_machine(scope: Scope) -> bool:
    """Whether the request's client (after :class:`ForwardedHeaders`: the one a trusted proxy
    stands for) is on this machine's loopback."""
    client = scope.get("client")
    ip = _ip(client[0]) if client else None
    return ip is not None and any(ip in network for network in _LOOPBACK)


KNOWN_PEERS = 4096
"""Addresses whose answer :class:`TrustedProxies` keeps."""


class TrustedProxies:
    """Loopback and the configured networks."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: list[Network] = [
            ipaddress.ip_network(n, strict=False) for n in (*LOOPBACK, *networks)
        ]
        self._known: dict[str, bool] = {}
        """Answers for the peers seen last (a client's requests come from one address)."""

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        known = self._known.get(address)
        if known is None:
            ip = _ip(address)
            known = ip is not None and any(ip in network for network in self.networks)
            if len(self._known) >= KNOWN_PEERS:
                self._known.clear()
            self._known[address] = known
        return known

    def client(self, forwarded_for: str) -> str | None:
        """The right-most address of ``forwarded_for`` that is not a trusted proxy (the
        left-most when all are), or ``None`` when it names none."""
        hops = [hop.strip() for hop in forwarded_for.split(",")[-MAX_HOPS:] if hop.strip()]
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                return None  # not an address: believe nothing further left
            if hop not in self:
                return str(ip)
        return str(_ip(hops[0])) if hops else None


class ForwardedHeaders:
    """ASGI middleware: ``scope["client"]`` and ``scope["scheme"]`` as the trusted proxy saw
    them, and the host it was asked for in ``scope["rulekit.forwarded_host"]``."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer and peer[0] in self.trusted:
                self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        forwarded_for: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = (
                        proto if scope["type"] == "http" else proto.replace("http", "ws")
                    )
            elif name == b"x-forwarded-host":
                host = value.decode("latin-1").split(",")[0].strip()
                if host:
                    scope[FORWARDED_HOST] = host
        if forwarded_for:
            client = self.trusted.client(", ".join(forwarded_for))
            if client is not None:
                scope["client"] = (client, 0)
