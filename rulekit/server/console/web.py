"""What every console response carries (security headers, also on the responses no console
handler makes: :class:`ConsoleHeaders`), and the same-origin check of requests that change
something."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rulekit.server.proxy import FORWARDED_HOST

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; "
    # Trusted Types with no policy: the browser refuses every string that would become markup
    # or script (innerHTML, insertAdjacentHTML, document.write, a javascript: URL followed, an
    # on* attribute), so that "client data is put into the page as text" is the browser's rule,
    # not only the scripts' habit
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers post forms with "Origin: null"
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    # a page of another site that opened the console (window.open) keeps no handle on it: it
    # cannot send it elsewhere (a look-alike sign-in page) nor count what it holds
    "Cross-Origin-Opener-Policy": "same-origin",
    # and cannot load its answers (a conversation's JSON, a sound) into a page of its own
    "Cross-Origin-Resource-Policy": "same-origin",
}


def secure(response: Response, *, cache: bool = False) -> Response:
    """``response`` with the security headers (and ``no-store`` unless ``cache``)."""
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


class ConsoleHeaders:
    """ASGI middleware: every response of a path under ``/console`` carries the security
    headers (and ``no-store`` unless it says how it may be cached), also those no console
    handler made: the router's 404 for an unknown path, its 405 for a method a route does not
    take. What a handler set stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/console" and not path.startswith("/console/"):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, sending)


DEFAULT_PORTS = {"http": 80, "https": 443}


def same_origin(request: Request) -> bool:
    """Whether a form was posted from a page of this server (browsers send ``Origin`` with
    every POST; tools like curl send none and are let through).

    The whole origin must match — scheme, host and port — not the host alone: a page on
    ``http://`` or on another port of the same host is another site to the browser, and may
    be another program. This server's origin is the scheme it was reached by (``https`` when a
    trusted proxy says so in ``X-Forwarded-Proto``) and the ``Host`` the browser asked for, or
    the one a trusted proxy received (``X-Forwarded-Host``, when the proxy rewrote ``Host``).
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.path or parts.query or parts.fragment:
        return False  # an origin is scheme://host[:port], nothing more
    theirs = _origin(parts.scheme, parts.netloc)
    if theirs is None:
        return False
    scheme = str(request.scope.get("scheme", "http"))
    hosts = {request.headers.get("host"), request.scope.get(FORWARDED_HOST)}
    return any(theirs == _origin(scheme, host) for host in hosts if host)


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port made explicit; None when it is not
    an http(s) origin."""
    scheme = scheme.lower()
    default = DEFAULT_PORTS.get(scheme)
    if default is None or not netloc or "@" in netloc:
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.path or parts.query or parts.fragment:
        return None
    return scheme, host.lower(), default if port is None else port
