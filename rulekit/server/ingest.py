"""HTTP ingest: ``POST /webhooks/<channel>/<secret>``.

What a sender gets back:

* **200** ``{"status": "accepted", "id": N}`` — the body is in the inbox, committed to disk; or
  ``{"status": "duplicate", "id": N}`` for a redelivery of a body already accepted (it is not
  processed again);
* **404** ``{"error": "unknown channel or wrong secret"}`` — the same answer for both, so the
  answer does not tell which channels exist. The secret is compared in constant time; so is a
  header a provider requires besides (:meth:`~rulekit.channels.base.Provider.authorize_webhook`,
  e.g. Telegram's secret token header), and a missing or wrong one gets this same answer;
* **415** — the body has a ``Content-Encoding`` (gzip, deflate, anything but ``identity``):
  webhooks are read as sent, never inflated (a small compressed body can inflate to gigabytes),
  and a compressed body read as JSON would only get a misleading 400;
* **413** — the body is over ``server.max_body_bytes`` (checked against Content-Length first,
  then while reading, so a lying Content-Length does not help);
* **400** — a body no provider can ever parse (see :mod:`rulekit.channels.body`): empty, not
  UTF-8 JSON, ``NaN``/``Infinity``, a number out of range, a key twice in one object, nested
  too deeply, or not a JSON object or array. Rejecting it now tells the sender; a body that is
  JSON but not what the provider expects is accepted, and set aside with its error when
  processed (visible, retryable once the plugin understands it). Lone surrogates (``"\\ud800"``)
  are no reason to refuse: providers see them as U+FFFD, the inbox keeps the exact bytes;
* **503** with ``Retry-After`` — the store cannot persist (read-only, full disk, locked):
  nothing was acknowledged, the sender should retry later. Never a 200 that was not persisted.
  Also when the provider's own code (``authorize_webhook``, ``conversation_key``) did not
  answer within its budget, or has too many calls under way
  (:mod:`rulekit.channels.hookrunner`): it runs off the event loop, so that a slow or stuck
  plugin holds up only its own channel's webhooks.
  Also when the bodies being read or handled at once would go over
  ``server.max_body_bytes_in_flight`` (:class:`BodyBudget`): refused before the body is read
  (by its Content-Length; a body without one as its chunks arrive), so many connections each
  sending a body of ``max_body_bytes`` cannot hold gigabytes between them.

**Delivery key.** A redelivery is recognised by ``sha256:<hex digest of the body>`` per channel:
a service that sends the same webhook again sends the same bytes. Two different bodies about
the same thing (a transcript after its fragments) are both accepted; the provider recognises
messages it has seen by their ids, and an event recorded once (same event id) never runs its
actions twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from rulekit.channels import body as body_json
from rulekit.channels.base import Provider
from rulekit.channels.body import BodyError
from rulekit.channels.hookrunner import HookRunner, HookUnanswered, overridden
from rulekit.errors import StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.logs import access_logged, log
from rulekit.runtime.metrics import Metrics
from rulekit.secrets import same_secret
from rulekit.snapshot import Snapshot
from rulekit.store.forms import PersonalValues

logger = logging.getLogger("rulekit.ingest")

NOT_FOUND = "unknown channel or wrong secret"
INLINE_READ_BYTES = 64 * 1024
"""Bodies up to this size are checked on the event loop; bigger ones in a worker thread (the
provider's ``conversation_key`` runs in its plugin's threads whatever the size)."""
ROUTE = "/webhooks/{channel}/{secret}"
ROUTES = (ROUTE, ROUTE + "/")
"""The webhook's paths: with a trailing slash it is the same webhook, answered, never
redirected (the router's redirect would repeat the secret in its ``Location``, on the scheme
the daemon sees: plain ``http://`` behind a proxy that does not forward its own)."""


class BodyTooLarge(Exception):
    pass


class OverBudget(Exception):
    """The bodies in flight would go over ``server.max_body_bytes_in_flight``."""


class BodyBudget:
    """The bytes of webhook bodies being read or handled at once, across all connections:
    each request takes its share before its body is read and gives it back when answered,
    however it ends (complete, refused, the client gone, cut off at the body deadline)."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, size: int, limit: int) -> bool:
        """Take ``size`` bytes if the total stays within ``limit``."""
        if self.used + size > limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Share:
    """One request's share of the :class:`BodyBudget`."""

    __slots__ = ("budget", "limit", "size")

    def __init__(self, budget: BodyBudget, limit: int) -> None:
        self.budget = budget
        self.limit = limit
        self.size = 0

    def grow(self, size: int) -> None:
        if not self.budget.take(size, self.limit):
            raise OverBudget
        self.size += size

    def release(self) -> None:
        self.budget.give(self.size)
        self.size = 0


class Ingest:
    """The webhook endpoint of one daemon: an ASGI app for :data:`ROUTE` (its ``channel`` and
    ``secret`` in ``scope["path_params"]``)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        commit: GroupCommit,
        metrics: Metrics,
        on_accepted: Callable[[], None],
        hooks: HookRunner | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.commit = commit
        self.metrics = metrics
        self.on_accepted = on_accepted
        self.hooks = hooks if hooks is not None else HookRunner()
        """Where the providers' own code runs (off the event loop, within a budget)."""
        self.accepting = True
        self.bodies = BodyBudget()
        """The bytes of the bodies in flight (``server.max_body_bytes_in_flight``)."""

    def authorized(self, snapshot: Snapshot, channel: str, secret: str) -> bool:
        """Whether ``secret`` is the webhook secret of a configured ``channel`` (constant time;
        a channel with no secret accepts nothing)."""
        configured = snapshot.config.channels.get(channel)
        expected = getattr(configured.settings, "webhook_secret", None) if configured else None
        wanted = expected.get_secret_value() if expected is not None else ""
        # compare even when nothing is configured, so timing says nothing about channels
        return same_secret(secret, wanted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        channel = params["channel"]
        status, answer = await self._handle(scope, receive, channel, params["secret"])
        self.metrics.webhooks.labels(channel if status != 404 else "", str(status)).inc()
        headers = [
            (b"content-length", str(len(answer)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    async def _handle(
        self, scope: Scope, receive: Receive, channel: str, secret: str
    ) -> tuple[int, bytes]:
        snapshot = self.snapshot()
        if not self.authorized(snapshot, channel, secret):
            return _error(404, NOT_FOUND, channel)
        if not self.accepting:  # (after the secret: a metric's label is a configured channel)
            return _error(503, "the daemon is shutting down; retry later", channel)
        headers = Headers(scope=scope)
        provider = snapshot.providers.get(channel)
        if provider is not None and overridden(provider, Provider, "authorize_webhook"):
            try:
                vouched = await self.hooks.run(provider.name, _vouched, provider, headers)
            except HookUnanswered as exc:
                return _unanswered(exc, channel)
            if not vouched:
                return _error(404, NOT_FOUND, channel)
        encoding = _content_coding(headers)
        if encoding is not None:
            return _error(
                415, f"Content-Encoding {encoding} is not accepted: send the body as it is", channel
            )
        server = snapshot.config.raw.server
        limit = server.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length is not a number", channel)
            if int(declared) > limit:
                return _error(413, f"the body is over {limit} bytes", channel)
        share = _Share(self.bodies, server.max_body_bytes_in_flight)
        try:
            return await self._receive(receive, channel, provider, limit, declared, share)
        except OverBudget:
            return _error(503, "too many webhook bodies are being read; retry later", channel)
        finally:
            share.release()  # (also when the request is cancelled: the client gone, a deadline)

    async def _receive(
        self,
        receive: Receive,
        channel: str,
        provider: Provider | None,
        limit: int,
        declared: str | None,
        share: _Share,
    ) -> tuple[int, bytes]:
        if declared is not None:
            share.grow(int(declared))  # the whole body's share before a byte of it is read
        try:
            body = await _read(receive, limit, None if declared is not None else share)
        except BodyTooLarge:
            return _error(413, f"the body is over {limit} bytes", channel)
        except ClientDisconnect:
            return _error(400, "the client went away before the body was complete", channel)
        if len(body) > INLINE_READ_BYTES:  # reading a big body would hold up the other requests
            read = await anyio.to_thread.run_sync(_read_body, body)
        else:
            read = _read_body(body)
        if isinstance(read, BodyError):  # (the sender is told what it quotes; the log is not)
            return _error(400, str(read), channel, quoted=read.quoted)
        conversation = None
        if provider is not None and overridden(provider, Provider, "conversation_key"):
            try:
                conversation = await self.hooks.run(provider.name, provider.conversation_key, read)
            except HookUnanswered as exc:
                return _unanswered(exc, channel)
        key = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            inbox_id, is_new = await self.commit.run(
                lambda state: state.append_inbox(
                    channel, body, delivery_key=key, conversation_key=conversation
                )
            )
        except StoreUnavailable as exc:
            log(logger, logging.ERROR, "webhook not stored", failure=exc, channel=channel)
            return _error(503, "cannot store the webhook right now; retry later", channel)
        if not is_new:
            log(logger, logging.INFO, "webhook redelivered", channel=channel, inbox_id=inbox_id)
            return 200, _json({"status": "duplicate", "id": inbox_id})
        self.metrics.events_received.labels(channel).inc()
        self.on_accepted()
        return 200, b'{"status":"accepted","id":%d}' % inbox_id  # as _json writes it


class Webhooks:
    """ASGI middleware that hands ``POST /webhooks/<channel>/<secret>`` to the ingest at once,
    past the router and the middleware behind it: the one request a busy daemon gets
    hundreds of a second. Taken only while requests are not logged (the access log and the
    forwarded client address it shows are then what the app's own stack is for) and when no
    ``root_path`` is set; otherwise the request goes the usual way, to the same endpoint."""

    def __init__(self, app: ASGIApp, ingest: ASGIApp) -> None:
        self.app = app
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            parts = scope["path"].split("/")
            # as the routes match: /webhooks/{channel}/{secret}, neither part empty, and a
            # trailing slash
            if len(parts) == 5 and parts[4] == "":
                parts.pop()
            if len(parts) == 4 and parts[1] == "webhooks" and parts[2] and parts[3]:
                if not access_logged():
                    scope["path_params"] = {"channel": parts[2], "secret": parts[3]}
                    await self.ingest(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _json(content: dict[str, Any]) -> bytes:
    """``content`` as Starlette's ``JSONResponse`` writes it."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _content_coding(headers: Headers) -> str | None:
    """The request's content coding other than ``identity``, shown for the sender (quoted and
    cut short), or None when the body is sent as it is."""
    for value in headers.getlist("content-encoding"):
        for coding in value.split(","):
            coding = coding.strip()
            if coding and coding.lower() != "identity":
                return repr(coding if len(coding) <= 20 else coding[:20] + "...")
    return None


def _vouched(provider: Provider, headers: Headers) -> bool:
    """Whether the provider accepts the request's headers (a service's own secret header)."""
    try:
        return provider.authorize_webhook(headers)
    except Exception:  # the contract says it must not raise; a plugin's bug refuses the request
        logger.warning("provider %s: authorize_webhook failed", provider.name, exc_info=True)
        return False


def _read_body(body: bytes) -> Any:
    """Why no provider can accept ``body`` (a :class:`BodyError`), or else the body read (a
    dict or a list)."""
    try:
        return body_json.load(body)
    except BodyError as exc:
        return exc


def _unanswered(exc: HookUnanswered, channel: str) -> tuple[int, bytes]:
    """A 503 for a request the provider's code did not answer (nothing acknowledged)."""
    return _error(503, f"{exc}; retry later", channel)


async def _read(receive: Receive, limit: int, share: _Share | None) -> bytes:
    """The body, up to ``limit`` bytes; each chunk taken from ``share`` first when given (a
    body of unknown length), so that what is kept never goes over the budget."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if share is not None:
            share.grow(len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(
    status: int, message: str, channel: str, *, quoted: str | None = None
) -> tuple[int, bytes]:
    """The answer ``status`` with ``message``, logged; ``quoted``: what of the body the message
    quotes, hidden in the log unless content may be logged (a key may be a client's)."""
    log(
        logger,
        logging.WARNING,
        f"webhook refused: {message}",
        personal=PersonalValues([quoted]) if quoted else None,
        channel=channel,
        status=status,
    )
    return status, _json({"error": message})
