"""``webhook``: call a URL named in the config, with a signed body (through httpx).

Targets are named under ``integrations: {webhooks: {<name>: {url, ...}}}``
(:mod:`rulekit.actions.webhook_targets`); a rule names one literally (``to: crm``), so no
template and no client data can choose where a request goes. Redirects are not followed, for
the same reason, and no proxy named in the environment (``HTTP_PROXY``...) is used. The body
is built by :mod:`rulekit.actions.webhook_body`; every attempt gets a fresh
``X-Rulekit-Timestamp`` and ``X-Rulekit-Signature``, and the job's stable
``X-Rulekit-Delivery`` (which the signature covers too).

The URL (its path and query often hold a token: Slack and Zapier hooks) and every header value
are treated as secrets: masked in the dry run, redacted from errors and logs.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.config import JsonDict

from rulekit.actions.base import Action, ActionContext
from rulekit.actions.pacing import Pace
from rulekit.actions.rates import retry_after
from rulekit.actions.webhook_body import (
    encode_json,
    event_document,
    first_bytes,
    signature,
    takes_values,
    text_escaper,
)
from rulekit.actions.webhook_targets import (
    WebhooksIntegration,
    WebhookTarget,
    is_token,
    masked_url,
)
from rulekit.config import Config
from rulekit.errors import ActionError, PermanentActionError, RetryableActionError, did_you_mean
from rulekit.expr.markup import Interpolations, map_leaves
from rulekit.hookspecs import hookimpl
from rulekit.hosts import plain_http_host
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.secrets import MIN_WEBHOOK_SECRET, redact

if TYPE_CHECKING:
    import httpx

__all__ = [
    "Webhook",
    "WebhookParams",
    "WebhookTarget",
    "WebhooksIntegration",
    "retry_after",
]


def _is_content_type(text: str) -> bool:
    """``type/subtype`` tokens, then optional ``;`` parameters of ASCII without control
    characters nor a space at the end: what the HTTP client sends in a header (anything else
    failed every call)."""
    kind, _, parameters = text.partition(";")
    main, slash, sub = kind.partition("/")
    if not (slash and is_token(main) and is_token(sub)):
        return False
    if not parameters.isascii() or parameters != parameters.rstrip():
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in parameters)


JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


_NOT_A_TEMPLATE: JsonDict = {
    "not": {"type": "string", "pattern": r"\{\{|\{%|\{#"},
    "x-template": False,
}
_GIVEN: JsonDict = {"not": {"type": "null"}}


class WebhookParams(StrictModel):
    model_config = {
        "json_schema_extra": {
            # body or text, not both; a content_type with a text
            "not": {"required": ["body", "text"], "properties": {"body": _GIVEN, "text": _GIVEN}},
            "dependentSchemas": {
                "content_type": {
                    "anyOf": [
                        {"properties": {"content_type": {"type": "null"}}},
                        {"required": ["text"], "properties": {"text": _GIVEN}},
                    ]
                }
            },
        }
    }

    to: str = Field(
        min_length=1,
        description="A target named under integrations.webhooks.",
        json_schema_extra=_NOT_A_TEMPLATE,
    )
    body: dict[str, Any] | None = Field(
        None, description="A mapping sent as JSON; each string in it is a template."
    )
    text: str | None = Field(None, description="A text body instead (with content_type).")
    content_type: str | None = Field(
        None,
        description="The text's type (default text/plain); values are escaped for it.",
        json_schema_extra=_NOT_A_TEMPLATE,
    )

    @model_validator(mode="before")
    @classmethod
    def _literal(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("to", "content_type"):
                if isinstance(data.get(key), str) and _is_template(data[key]):
                    raise ValueError(f"`{key}` is not a template: name it as it is")
        return data

    @model_validator(mode="after")
    def _one_body(self) -> WebhookParams:
        if self.body is not None and self.text is not None:
            raise ValueError("give `body` (sent as JSON) or `text`, not both")
        if self.content_type is not None:
            if self.text is None:
                raise ValueError("`content_type` goes with `text` (a `body` is JSON)")
            if not _is_content_type(self.content_type):
                raise ValueError(
                    f"{self.content_type!r} is not a content type (type/subtype, then "
                    "`; name=value` parameters in ASCII)"
                )
            if _is_template(self.text or "") and not takes_values(self.content_type):
                kind = self.content_type.split(";", 1)[0].strip().lower()
                raise ValueError(
                    f"a {kind} text cannot hold values: rulekit has no escape for its "
                    "structure, so a value could add a line, a part or a field of its own; "
                    "use text/plain, a JSON type, application/x-www-form-urlencoded, HTML or "
                    "XML, or `body:` (JSON)"
                )
        return self


class Webhook(Action):
    name = "webhook"
    description = "call a webhook target named in the config (signed JSON or text)"
    Params = WebhookParams
    integration = "webhooks"
    Integration = WebhooksIntegration
    markup = True  # values in a text body are escaped for its content type

    def __init__(self, settings: Any = None, **options: Any) -> None:
        super().__init__(settings, **options)
        timeouts = [target.timeout for target in self._targets().values()]
        if timeouts and "timeout" not in options:
            self.timeout = max(timeouts)
        self.clock = time.time
        """Where signatures get their timestamp (tests set a fixed one)."""
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def escape(cls, values: Interpolations, params: dict[str, Any]) -> dict[str, Any]:
        """``text`` escaped for its ``content_type``; every other leaf (the JSON ``body``
        included: the encoder quotes it) as it is."""
        out = {k: map_leaves(v, values.plain_text) for k, v in params.items() if k != "text"}
        text = params.get("text")
        if isinstance(text, str):
            escaper = text_escaper(str(out.get("content_type") or TEXT))
            out["text"] = escaper(values, text) if escaper else values.plain_text(text)
        elif "text" in params:
            out["text"] = text
        return out

    @classmethod
    def check(cls, params: WebhookParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        settings = config.integrations.get(cls.integration or "")
        if not isinstance(settings, WebhooksIntegration) or params.to in settings.root:
            return []  # no webhooks configured at all: a warning (see ``unavailable``)
        names = list(settings.root)
        known = ", ".join(sorted(names)) or "none"
        return [
            f"unknown webhook target {params.to!r}{did_you_mean(params.to, names)}"
            f" (integrations.webhooks has: {known})"
        ]

    @classmethod
    def lint(cls, params: WebhookParams, config: Config) -> list[str]:  # type: ignore[override]
        settings = config.integrations.get(cls.integration or "")
        target = settings.root.get(params.to) if isinstance(settings, WebhooksIntegration) else None
        if target is None:
            return []
        found = []
        url = target.url.get_secret_value()
        host = plain_http_host(url)
        if host is not None:
            found.append(
                f"webhook target {params.to!r} is plain http:// to {host}: the body "
                "and headers travel unencrypted; use https://"
            )
        parts = urlsplit(url)
        other = {"https": 80, "http": 443}.get(parts.scheme)
        if parts.port is not None and parts.port == other:
            found.append(
                f"webhook target {params.to!r} is {parts.scheme}:// on port {other}, the "
                f"other scheme's: every call would fail (write {parts.scheme}:// without it, or "
                "the port the receiver serves it on)"
            )
        if 0 < len(_value(target.secret)) < MIN_WEBHOOK_SECRET:
            found.append(
                f"the secret of webhook target {params.to!r} is shorter than "
                f"{MIN_WEBHOOK_SECRET} characters: one request the receiver got (or logged) "
                "lets anyone find it offline and sign calls of their own; use a long random "
                "string"
            )
        return found

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if self.settings is None:
            return "webhooks are not configured (integrations: webhooks)"
        empty = sorted(name for name, t in self._targets().items() if not _value(t.secret))
        if empty:
            return f"the secret of webhook target(s) {', '.join(map(repr, empty))} is empty"
        return None

    def destination(self, params: WebhookParams) -> str:  # type: ignore[override]
        return f"webhook:{params.to}"

    def pacing(self, params: WebhookParams) -> list[Pace]:  # type: ignore[override]
        target = self._targets().get(params.to)
        return [Pace(self.destination(params), target.rate_limit if target else None)]

    def describe(self, params: WebhookParams, context: ActionContext) -> str:  # type: ignore[override]
        target = self._targets().get(params.to)
        content_type, body = self.body(params, context)
        shown = body.decode("utf-8", errors="replace")
        if target is None:
            return f"call webhook {params.to!r} ({content_type}): {shown}"
        stamped = {
            "X-Rulekit-Delivery": context.delivery or "<the job's id>",
            "X-Rulekit-Timestamp": "<the time of each attempt>",
            "X-Rulekit-Signature": "sha256=<HMAC of each attempt>",
        }
        headers = request_headers(target, content_type, stamped, masked=True)
        listed = ", ".join(f"{name}: {value}" for name, value in headers.items())
        return f"{target.method} {masked_url(target)} (webhook {params.to}) [{listed}]: {shown}"

    def body(self, params: WebhookParams, context: ActionContext) -> tuple[str, bytes]:
        """The content type and the exact bytes a call with ``params`` sends."""
        if params.text is not None:
            return params.content_type or TEXT, params.text.encode()
        document = params.body if params.body is not None else event_document(context.event)
        return JSON, encode_json(document)

    # execution -----------------------------------------------------------------------------
    async def execute(self, params: WebhookParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        import httpx

        target = self._targets().get(params.to)
        if target is None:
            raise PermanentActionError(f"webhook target {params.to!r} is not configured")
        secret = _value(target.secret)
        if not secret:
            raise PermanentActionError(f"the secret of webhook target {params.to!r} is empty")
        content_type, body = self.body(params, context)
        timestamp = int(self.clock())
        delivery = context.delivery or uuid.uuid4().hex
        stamped = {
            "X-Rulekit-Delivery": delivery,
            "X-Rulekit-Timestamp": str(timestamp),
            # (the delivery id signed too: receivers de-duplicate on it)
            "X-Rulekit-Signature": signature(secret, timestamp, delivery, body),
        }
        headers = request_headers(target, content_type, stamped)
        where = f"webhook {params.to!r}"
        response: httpx.Response | None = None
        start = bytearray()
        try:
            async with (
                asyncio.timeout(target.timeout),
                self._http().stream(
                    target.method,
                    target.url.get_secret_value(),
                    content=body,
                    headers=headers,
                    timeout=target.timeout,
                ) as response,
            ):
                await _answer_start(response, start)
        except (TimeoutError, httpx.TimeoutException):
            if response is not None:  # the answer's status came, the rest of it did not
                return self._outcome(target, where, response, bytes(start), whole=False)
            raise RetryableActionError(
                f"{where} did not answer within {target.timeout:g} s"
            ) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            raise PermanentActionError(self._redact(target, f"{where}: {exc}")) from None
        except httpx.TransportError as exc:
            if response is not None:  # the connection was lost after the answer's status
                return self._outcome(target, where, response, bytes(start), whole=False)
            untrusted = _certificate_refusal(exc)
            if untrusted is not None:  # as the email action's: no retry changes who signed it
                host = urlsplit(target.url.get_secret_value()).hostname
                raise PermanentActionError(
                    self._redact(
                        target,
                        f"{where}: the certificate of {host} is not trusted ({untrusted}): "
                        "nothing was sent (a private CA's certificates go in SSL_CERT_FILE)",
                    )
                ) from None
            message = self._redact(target, f"{where}: {type(exc).__name__}: {exc}")
            raise RetryableActionError(message) from None
        return self._outcome(target, where, response, bytes(start))

    def _outcome(
        self,
        target: WebhookTarget,
        where: str,
        response: httpx.Response,
        content: bytes,
        *,
        whole: bool = True,
    ) -> dict[str, Any]:
        """What the answer means, by its status. One that did not come ``whole`` (the
        connection lost, or the timeout, after its status) means the same: a 2xx is success
        (the receiver took the call; making it again would deliver it twice)."""
        status = response.status_code
        encoding = response.headers.get("content-encoding", "identity").strip().lower()

        def shown(limit: int) -> str:
            if encoding in ("", "identity"):
                return first_bytes(content, limit)
            return f"({encoding[:40]}-encoded answer)"

        start = self._redact(target, shown(512))
        if 200 <= status < 300:
            if not whole:
                return {"status": status, "body": start, "answer": "cut short"}
            return {"status": status, "body": start}
        message = self._redact(target, f"{where}: HTTP {status}: {shown(200)}")
        error: ActionError
        if status == 429 or status >= 500 or status == 408:
            # a 503 may say when to come back too
            wait = retry_after(response.headers.get("retry-after"), self.clock())
            error = RetryableActionError(message, retry_after=wait, status=status)
        elif 300 <= status < 400:
            error = PermanentActionError(
                f"{message} (redirects are not followed: put the final URL in the config)",
                status=status,
            )
        else:
            error = PermanentActionError(message, status=status)
        raise error

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _targets(self) -> dict[str, WebhookTarget]:
        return self.settings.root if isinstance(self.settings, WebhooksIntegration) else {}

    def _http(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # a new event loop (a test's asyncio.run): the old connections died with its loop.
            # A transport of its own: the client then takes no proxy from the environment
            # (HTTP_PROXY, ALL_PROXY...), which would get every call in clear, the URL's token
            # and the headers included, even one to this machine (SSL_CERT_FILE still counts)
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(), follow_redirects=False
            )
            self._loop = loop
        return self._client

    @staticmethod
    def _redact(target: WebhookTarget, text: str) -> str:
        url = target.url.get_secret_value()
        parts = urlsplit(url)
        hidden: list[str] = [url, _value(target.secret)]
        for header in target.headers.values():
            # "Bearer <token>": the token alone may come back too
            hidden.extend([header.get_secret_value(), *_words(header.get_secret_value())])
        if len(parts.path) > 1:
            hidden.append(parts.path)
        if parts.query:
            hidden.append(parts.query)
        # a token in the path or query ("/services/T0/B0/<token>", "?key=<token>") may be
        # quoted alone
        values = (item.partition("=")[2] for item in parts.query.split("&"))
        pieces = [*parts.path.split("/"), *values]
        hidden.extend(piece for piece in pieces if len(piece) >= 8)
        longest_first: list[str] = sorted(hidden, key=len, reverse=True)
        return redact(text, longest_first)


def request_headers(
    target: WebhookTarget, content_type: str, stamped: dict[str, str], *, masked: bool = False
) -> dict[str, str]:
    """The headers of a call to ``target`` (the dry run lists them ``masked``: the target's
    values as ``***``): the content type, rulekit's defaults, the target's own headers (one
    of them replaces a default of its name, whatever its case: never two of one name), then
    the ``stamped`` ``X-Rulekit-*`` ones."""
    headers = {
        "Content-Type": content_type,
        "User-Agent": "rulekit",
        "Accept-Encoding": "identity",  # an answer is never inflated: see _answer_start
    }
    for name, value in target.headers.items():
        for default in [known for known in headers if known.lower() == name.lower()]:
            del headers[default]
        headers[name] = "***" if masked else value.get_secret_value()
    headers.update(stamped)
    return headers


MAX_ANSWER = 4096
"""Bytes of an answer read (the audit keeps its first 512): whatever the answer's length, or
its compression, a call holds no more than this of it."""


async def _answer_start(response: httpx.Response, start: bytearray) -> None:
    """Read the first :data:`MAX_ANSWER` bytes of ``response``'s body into ``start`` as they
    come (never decompressed: a small gzip can inflate to gigabytes); the rest is not read.
    What came is in ``start`` also when the rest does not come."""
    async for chunk in response.aiter_raw():
        start += chunk
        if len(start) > MAX_ANSWER:
            break


def _certificate_refusal(exc: BaseException) -> str | None:
    """Why the TLS handshake behind ``exc`` refused the server's certificate (untrusted,
    expired, for another name), or None when it was no such refusal."""
    seen: BaseException | None = exc
    for _ in range(10):  # (httpx's error, httpcore's, ssl's)
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "certificate verify failed")
        seen = seen.__cause__ or seen.__context__
    return None


def _words(value: str) -> list[str]:
    return [word for word in value.split() if len(word) >= 8]


def _value(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Webhook)
