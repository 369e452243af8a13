"""The HTTP transport of the ``telegram`` action's bot: the token put into the URL at the last
moment (so that HTTP logs, error messages and reprs never show it), every answer read with a
bound, and the status and Retry-After of the last answer noted for the action's classification
of failures; and the waits its answers ask for."""

from __future__ import annotations

import contextvars
import socket
import time
import warnings
from typing import TYPE_CHECKING, Any

from rulekit.actions.answers import bounded_stream
from rulekit.actions.rates import retry_after
from rulekit.errors import service_wait

if TYPE_CHECKING:
    import httpx

TOKEN_MARK = "rulekit-token"
"""Stands for the token in the URLs python-telegram-bot builds; the transport swaps it."""

last_status: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rulekit_telegram_status", default=None
)
"""The HTTP status of the last Bot API answer in this task (python-telegram-bot's errors do
not always keep it)."""
last_retry_after: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "rulekit_telegram_retry_after", default=None
)
"""The ``Retry-After`` header of that answer, if it had one (a proxy's 429 or 503 says its wait
there, not in the Bot API's ``parameters``, which python-telegram-bot reads)."""


def token_transport(token: str, connections: int) -> httpx.AsyncBaseTransport:
    """An httpx transport that puts ``token`` into the URL for the wire only, reads every
    answer through :func:`~rulekit.actions.answers.bounded_stream`, and notes each answer's
    status in :data:`last_status`."""
    import httpx

    class TokenTransport(httpx.AsyncBaseTransport):
        """Puts the token into the URL for the wire only; what httpx logs keeps the mark."""

        def __init__(self) -> None:
            self._inner = httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=connections),
                # a request goes out in two writes; without this, Nagle may hold the second
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            url = request.url
            if TOKEN_MARK in url.path:
                url = url.copy_with(path=url.path.replace(TOKEN_MARK, token))
            headers = request.headers.copy()
            headers["accept-encoding"] = "identity"  # never inflated: see bounded_stream
            wire = httpx.Request(
                request.method,
                url,
                headers=headers,
                stream=request.stream,
                extensions=request.extensions,
            )
            last_status.set(None)  # this call's status, not an earlier one's (getMe's)
            last_retry_after.set(None)
            response = await self._inner.handle_async_request(wire)
            last_status.set(response.status_code)
            last_retry_after.set(response.headers.get("retry-after"))
            return bounded_stream(response)

        async def aclose(self) -> None:
            await self._inner.aclose()

        def __repr__(self) -> str:
            return "<TokenTransport>"

    return TokenTransport()


def header_wait() -> float | None:
    """The wait the last answer's ``Retry-After`` header asks for (seconds or a date), or
    None."""
    return retry_after(last_retry_after.get(), time.time())


def flood_wait(exc: Any) -> float | None:
    """The flood-control wait, as the dispatcher may honour it (:func:`service_wait`); None
    when the answer's is no number."""
    from telegram.warnings import PTBDeprecationWarning

    with warnings.catch_warnings():  # the int-or-timedelta transition warns on read
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    try:
        seconds = float(value.total_seconds() if hasattr(value, "total_seconds") else value)
    except (TypeError, ValueError, OverflowError):
        return None
    return service_wait(seconds)
