"""HTTP ingest: ``POST /webhooks/<channel>/<secret>``.

What a sender gets back:

* **200** ``{"status": "accepted", "id": N}`` — the body is in the inbox, committed to disk; or
  ``{"status": "duplicate", "id": N}`` for a redelivery of a body already accepted (it is not
  processed again);
* **404** ``{"error": "unknown channel or wrong secret"}`` — the same answer for both, so the
  answer does not tell which channels exist. The secret is compared in constant time; so is a
  header a provider requires besides (:meth:`~rulekit.channels.base.Provider.authorize_webhook`,
  e.g. Telegram's secret token header), and a missing or wrong one gets this same answer;
* **413** — the body is over ``server.max_body_bytes`` (checked against Content-Length first,
  then while reading, so a lying Content-Length does not help);
* **400** — a body no provider can ever parse (see :mod:`rulekit.channels.body`): empty, not
  UTF-8 JSON, ``NaN``/``Infinity``, a number out of range, a key twice in one object, nested
  too deeply, or not a JSON object or array. Rejecting it now tells the sender; a body that is
  JSON but not what the provider expects is accepted, and set aside with its error when
  processed (visible, retryable once the plugin understands it). Lone surrogates (``"\\ud800"``)
  are no reason to refuse: providers see them as U+FFFD, the inbox keeps the exact bytes;
* **503** — the store cannot persist (read-only, full disk, locked): nothing was acknowledged,
  the sender should retry later. Never a 200 that was not persisted.

**Delivery key.** A redelivery is recognised by ``sha256:<hex digest of the body>`` per channel:
a service that sends the same webhook again sends the same bytes. Two different bodies about
the same thing (a transcript after its fragments) are both accepted; the provider recognises
messages it has seen by their ids, and an event recorded once (same event id) never runs its
actions twice.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from rulekit.channels import body as body_json
from rulekit.channels.base import Provider
from rulekit.channels.body import BodyError
from rulekit.errors import StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.snapshot import Snapshot

logger = logging.getLogger("rulekit.ingest")

NOT_FOUND = "unknown channel or wrong secret"
INLINE_READ_BYTES = 64 * 1024
"""Bodies up to this size are checked on the event loop; bigger ones in a worker thread."""


class BodyTooLarge(Exception):
    pass


class Ingest:
    """The webhook endpoint of one daemon."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        commit: GroupCommit,
        metrics: Metrics,
        on_accepted: Callable[[], None],
    ) -> None:
        self.snapshot = snapshot
        self.commit = commit
        self.metrics = metrics
        self.on_accepted = on_accepted
        self.accepting = True

    def authorized(self, snapshot: Snapshot, channel: str, secret: str) -> bool:
        """Whether ``secret`` is the webhook secret of a configured ``channel`` (constant time;
        a channel with no secret accepts nothing)."""
        configured = snapshot.config.channels.get(channel)
        expected = getattr(configured.settings, "webhook_secret", None) if configured else None
        wanted = expected.get_secret_value() if expected is not None else ""
        # compare even when nothing is configured, so timing says nothing about channels
        same = hmac.compare_digest(secret.encode(), (wanted or "\x00" * 32).encode())
        return bool(wanted) and same

    async def handle(self, request: Request) -> JSONResponse:
        """The endpoint (a Starlette request handler)."""
        channel = request.path_params["channel"]
        response = await self._handle(request, channel)
        self.metrics.webhooks.labels(
            channel if response.status_code != 404 else "", str(response.status_code)
        ).inc()
        return response

    async def _handle(self, request: Request, channel: str) -> JSONResponse:
        if not self.accepting:
            return _error(503, "the daemon is shutting down; retry later", channel)
        snapshot = self.snapshot()
        if not self.authorized(snapshot, channel, request.path_params["secret"]):
            return _error(404, NOT_FOUND, channel)
        provider = snapshot.providers.get(channel)
        if provider is not None and not _vouched(provider, request):
            return _error(404, NOT_FOUND, channel)
        limit = snapshot.config.raw.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length is not a number", channel)
            if int(declared) > limit:
                return _error(413, f"the body is over {limit} bytes", channel)
        try:
            body = await _read(request, limit)
        except BodyTooLarge:
            return _error(413, f"the body is over {limit} bytes", channel)
        except ClientDisconnect:
            return _error(400, "the client went away before the body was complete", channel)
        if len(body) > INLINE_READ_BYTES:  # reading a big body would hold up the other requests
            read = await anyio.to_thread.run_sync(_read_body, body, provider)
        else:
            read = _read_body(body, provider)
        if isinstance(read, BodyError):
            return _error(400, str(read), channel)
        conversation = read
        key = "sha256:" + hashlib.sha256(body).hexdigest()
        try:
            inbox_id, is_new = await self.commit.run(
                lambda state: state.append_inbox(
                    channel, body, delivery_key=key, conversation_key=conversation
                )
            )
        except StoreUnavailable as exc:
            log(logger, logging.ERROR, f"webhook not stored: {exc}", channel=channel)
            return _error(503, "cannot store the webhook right now; retry later", channel)
        if not is_new:
            log(logger, logging.INFO, "webhook redelivered", channel=channel, inbox_id=inbox_id)
            return JSONResponse({"status": "duplicate", "id": inbox_id})
        self.metrics.events_received.labels(channel).inc()
        self.on_accepted()
        return JSONResponse({"status": "accepted", "id": inbox_id})


def _vouched(provider: Provider, request: Request) -> bool:
    """Whether the provider accepts the request's headers (a service's own secret header)."""
    try:
        return provider.authorize_webhook(request.headers)
    except Exception:  # the contract says it must not raise; a plugin's bug refuses the request
        logger.warning("provider %s: authorize_webhook failed", provider.name, exc_info=True)
        return False


def _read_body(body: bytes, provider: Provider | None) -> BodyError | str | None:
    """Why no provider can accept ``body`` (a :class:`BodyError`), or else its conversation key."""
    try:
        body_json.load(body)
    except BodyError as exc:
        return exc
    return provider.conversation_key(body) if provider is not None else None


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, channel: str) -> JSONResponse:
    log(logger, logging.WARNING, f"webhook refused: {message}", channel=channel, status=status)
    return JSONResponse({"error": message}, status_code=status)
