"""The targets of ``webhook``: ``integrations: {webhooks: {<name>: {url, secret, ...}}}``.

A target is where and how a call goes (method, extra headers, timeout, rate limit) and the key
its body is signed with. The URL and every header value count as secrets: the URL's path and
query often hold a token (Slack and Zapier hooks), so only :func:`masked_url` is ever shown.
What the config may set is checked when it loads: an http(s) URL without credentials or
fragment (:func:`url_problem`), header names that are tokens and not set by the HTTP client or
rulekit (:data:`RESERVED_HEADERS`, ``X-Rulekit-*``, ``Content-Type``: the rule's, which values
are escaped for), values of ASCII without control characters nor spaces around them (what the
HTTP client can send).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, RootModel, SecretStr, field_validator

from rulekit.actions.pacing import Limit
from rulekit.actions.rates import Rate
from rulekit.hosts import host_problem
from rulekit.models import StrictModel

_TOKEN_CHARS = frozenset(
    "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
)
"""The characters of an HTTP token (RFC 9110): header names, content type and subtype."""


def is_token(text: str) -> bool:
    """Whether ``text`` is an HTTP token (a header name, a content type's type or subtype)."""
    return bool(text) and all(c in _TOKEN_CHARS for c in text)


RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
"""Headers the HTTP client sets; a target may not set them (nor any ``X-Rulekit-*``)."""


class WebhookTarget(StrictModel):
    """One named target: ``integrations: {webhooks: {crm: {url: ..., secret: ...}}}``."""

    url: SecretStr = Field(description="http(s) URL; its path and query are kept secret.")
    secret: SecretStr = Field(description="Key of the HMAC-SHA256 signature, from ${ENV}.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra headers (values are secrets: ${ENV})."
    )
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds to wait for an answer.")
    rate_limit: Rate = Field(Limit(10, 1.0), description="At most this many calls: 10/s, 60/m.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        problem = url_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        seen: set[str] = set()
        for name, header in value.items():
            if not is_token(name):
                raise ValueError(f"{name!r} is not a valid header name")
            lowered = name.lower()
            if lowered in seen:  # both would be sent, and a receiver may read either
                raise ValueError(f"header {name!r} is given twice (names ignore letter case)")
            seen.add(lowered)
            if lowered == "content-type":
                # values are escaped for the rule's content type: a target's own would let a
                # value escaped for text/plain reach a receiver that reads it as HTML
                raise ValueError(
                    "the content type is the rule's (`content_type:` with `text:`, JSON with "
                    "`body:`), which values are escaped for: remove the Content-Type header"
                )
            if lowered in RESERVED_HEADERS or lowered.startswith("x-rulekit-"):
                raise ValueError(f"header {name!r} is set by rulekit; remove it")
            text = header.get_secret_value()
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
                raise ValueError(f"the value of header {name!r} holds control characters")
            # else every call would fail: the HTTP client sends ASCII values, without spaces
            # around them (a line break in an environment variable, a typographic character)
            if not text.isascii():
                raise ValueError(f"the value of header {name!r} holds characters beyond ASCII")
            if text != text.strip(" \t"):
                raise ValueError(f"the value of header {name!r} begins or ends with a space")
        return value


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook target, or None."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "a webhook URL cannot hold spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "a webhook URL must start with https:// (or http://)"
    if not parts.hostname:
        return "a webhook URL needs a host"
    if not _brackets_fit(parts.netloc):
        # else this check and the HTTP client could read different hosts in it
        return "a webhook URL's brackets hold an IPv6 address, the whole host: https://[::1]:8443/"
    problem = host_problem(parts.hostname)
    if problem:
        return f"the webhook URL's host {parts.hostname!r} {problem}"
    if parts.username is not None or parts.password is not None:
        return "put credentials in `headers` (from ${ENV}), not in the URL"
    if parts.fragment:
        return "a webhook URL cannot have a #fragment"
    return None


def _brackets_fit(netloc: str) -> bool:
    """Whether ``netloc`` has no bracket, or is ``[address]`` with an optional ``:port``."""
    if not netloc.startswith("["):
        return "[" not in netloc and "]" not in netloc
    inner, closed, rest = netloc[1:].partition("]")
    if not closed or "[" in inner or "]" in rest:
        return False
    return rest == "" or (rest.startswith(":") and rest[1:].isascii() and rest[1:].isdigit())


class WebhooksIntegration(RootModel[dict[str, WebhookTarget]]):
    """``integrations: {webhooks: ...}``: targets by name."""

    root: dict[str, WebhookTarget] = Field(default_factory=dict)


def masked_url(target: WebhookTarget) -> str:
    """The target's URL with its path and query hidden (they often hold a token)."""
    parts = urlsplit(target.url.get_secret_value())
    host = parts.netloc
    return (
        f"{parts.scheme}://{host}/***"
        if parts.path.strip("/") or parts.query
        else f"{parts.scheme}://{host}/"
    )
