"""What every console response carries (security headers), and the same-origin check of
requests that change something."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from rulekit.server.proxy import FORWARDED_HOST

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers post forms with "Origin: null"
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def secure(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    """``response`` with the security headers (and ``no-store`` unless ``cache``)."""
    return response


def same_origin(request: Request) -> bool:
    """Whether a form was posted from a page of this server (browsers send ``Origin`` with
    every POST; tools like curl send none and are let through). The page's host is the
    ``Host`` the browser asked for, or the one a trusted proxy received (``X-Forwarded-Host``,
    when the proxy rewrote ``Host``)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    hosts = {request.headers.get("host"), request.scope.get(FORWARDED_HOST)}
    return any(netloc == host.lower() for host in hosts if host)
