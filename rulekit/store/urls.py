"""Storage URLs shown without their secrets: the one place that hides a URL's password.

A storage URL may carry a password in two places libpq reads: the user info
(``postgresql://rulekit:s3cret@db/rulekit``) and the query (``?password=s3cret``, and
``sslpassword`` for a client key). :func:`redact_url` replaces each with ``***``; every message,
log line and command output that names a store passes the URL through it. Linear time: no regex.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit

REDACTED = "***"

SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""Query parameters whose values are secrets (libpq's names; compared case-insensitively)."""


def redact_url(url: str) -> str:
    """``url`` with its password (in the user info or the query) replaced by ``***``.

    A URL Python cannot split (a malformed ``[IPv6]`` host) keeps only its scheme.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        scheme, separator, _ = url.partition("://")
        return f"{scheme}://{REDACTED}" if separator else REDACTED
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    query = "&".join(_redact_parameter(pair) for pair in parts.query.split("&"))
    if netloc == parts.netloc and query == parts.query:
        return url
    # rebuilt by hand: urlunsplit drops the "//" of a scheme it does not know (sqlite:///x)
    head = f"{url[: len(parts.scheme)]}:" if parts.scheme else ""
    if url[len(head) :].startswith("//"):
        head += "//"
    return (
        f"{head}{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _redact_parameter(pair: str) -> str:
    name, equals, _ = pair.partition("=")
    if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
        return f"{name}={REDACTED}"
    return pair
