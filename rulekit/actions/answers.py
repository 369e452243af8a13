"""Services' answers read with a bound: at most :data:`MAX_ANSWER` bytes of any answer.

A Web API's answer is small (``chat.postMessage``'s echoes the message: tens of KB at most),
but one that is not (a proxy's error page, a fault, a hostile endpoint behind a configured
``base_url``) would be read whole into memory, then parsed and quoted in the error. Past the
bound, the read fails as a lost connection would (:class:`AnswerTooLarge`); what the status
says is classified as for any unreadable answer: a 2xx is not retried (the call may have been
made: another attempt could send twice), anything else as its status says.

Nor does any session follow a redirect: a call, which carries a client's message, goes only
to the address the config names, never to one an answer points at; a redirect fails the call
for good with its status (the next attempt would be redirected too).

The sessions of the actions' SDKs read through :func:`bounded_response_class` (aiohttp) and
:class:`BoundedStream` (httpx).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from rulekit.errors import ActionError, PermanentActionError, RetryableActionError

if TYPE_CHECKING:
    import aiohttp
    import httpx

MAX_ANSWER = 1024 * 1024
"""Bytes of a service's answer read, at most."""
HEAD = 4096
"""Bytes of the beginning of an answer over :data:`MAX_ANSWER` kept with the error
(:attr:`AnswerTooLarge.head`), for a caller that can tell from it what the answer was about."""


_answer_status: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "rulekit_answer_status", default=None
)


def forget_answer() -> None:
    """A call starts in this task: :func:`lost_answer` knows of no answer until its head is
    read (by a session of :func:`bounded_response_class`)."""
    _answer_status.set(None)


def answer_status() -> int | None:
    """The status of the answer whose head was read in this task since :func:`forget_answer`,
    or None."""
    return _answer_status.get()


def lost_answer(message: str) -> ActionError | None:
    """The error of a call that failed (its connection closed, its time ran out) after the
    head of its answer was read, since :func:`forget_answer`: what the answer's status means,
    as for any unreadable answer (:func:`unreadable`: a 2xx is final, for the service took
    the call and another attempt could make it twice). None when no answer came: the failure
    is then the call's, retried as such."""
    status = answer_status()
    if status is None:
        return None
    return unreadable(f"{message} (the answer, HTTP {status}, did not come whole)", status)


class AnswerTooLarge(Exception):
    """An answer went past :data:`MAX_ANSWER` bytes; ``status`` is its HTTP status."""

    def __init__(self, status: int, head: bytes = b"") -> None:
        super().__init__(f"the answer (HTTP {status}) is over {MAX_ANSWER} bytes: not read")
        self.status = status
        self.head = head
        """The answer's first bytes (at most :data:`HEAD`), or nothing."""


def unreadable(message: str, status: int) -> ActionError:
    """The error of an answer that could not be read whole, with ``status``: a 2xx is final
    (the call was taken: another attempt could send twice), a 429, 5xx or 408 retried, any
    other status final."""
    if 200 <= status < 300:
        return PermanentActionError(
            f"{message} (the call may have been made; not retried, so as not to make it twice)",
            status=status,
        )
    if status in (408, 429) or status >= 500:
        return RetryableActionError(message, status=status)
    return PermanentActionError(message, status=status)


REDIRECTS = frozenset({301, 302, 303, 307, 308})
"""Statuses aiohttp would follow: a session of :func:`bounded_response_class` follows none."""


def _redirect_refused() -> type[Exception]:
    import aiohttp

    class RedirectRefused(aiohttp.ClientResponseError):
        """A service answered with a redirect, which is not followed: the call (a client's
        message in its body) goes only where the config says, never where an answer points.
        Raised as the head is read, before aiohttp would follow it; its status is the
        answer's, classified as any refusal (:func:`lost_answer`: final)."""

        def __init__(self, response: aiohttp.ClientResponse) -> None:
            where = response.headers.get("Location", "")
            where = where if len(where) <= 200 else where[:197] + "..."
            super().__init__(
                response.request_info,
                (),
                status=response.status,
                message=f"a redirect (to {where!r}) is not followed",
            )

    return RedirectRefused


@functools.cache
def bounded_response_class() -> type[aiohttp.ClientResponse]:
    """An aiohttp response class whose body is read up to :data:`MAX_ANSWER` bytes (pass it
    as ``ClientSession(response_class=...)``); past it, :class:`AnswerTooLarge`. A redirect
    is not followed: its head raises an :class:`aiohttp.ClientResponseError` with its status."""
    import aiohttp

    RedirectRefused = _redirect_refused()

    class BoundedResponse(aiohttp.ClientResponse):
        async def start(self, connection: Any) -> aiohttp.ClientResponse:
            started = await super().start(connection)
            _answer_status.set(self.status)  # the head is in: see lost_answer
            if self.status in REDIRECTS:
                raise RedirectRefused(self)
            return started

        async def read(self) -> bytes:
            if self._body is None:
                body = bytearray()
                try:
                    while chunk := await self.content.read(65536):
                        body += chunk
                        if len(body) > MAX_ANSWER:
                            raise AnswerTooLarge(self.status, bytes(body[:HEAD]))
                except BaseException:
                    self.close()
                    raise
                self._body = bytes(body)
            return await super().read()

    return BoundedResponse


def bounded_stream(response: httpx.Response) -> httpx.Response:
    """``response`` (from an httpx transport) with its body read up to :data:`MAX_ANSWER`
    bytes; past it, reading raises :class:`httpx.ReadError` (httpx's clients take no other
    exception from a stream). So does an answer with a ``Content-Encoding``: the bound counts
    the bytes that come, and httpx would inflate them after it (a MiB of gzip is a GB of
    text), so a compressed answer is never read (ask for ``Accept-Encoding: identity``)."""
    import httpx

    coding = response.headers.get("content-encoding", "").strip().lower()
    encoded = coding not in ("", "identity")

    class BoundedStream(httpx.AsyncByteStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            if encoded:
                shown = coding if len(coding) <= 40 else coding[:40] + "..."
                raise httpx.ReadError(
                    f"the answer (HTTP {response.status_code}) is {shown}-encoded: not inflated"
                )
            size = 0
            async for chunk in self._inner:
                size += len(chunk)
                if size > MAX_ANSWER:
                    raise httpx.ReadError(str(AnswerTooLarge(response.status_code)))
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=BoundedStream(response.stream),
        extensions=response.extensions,
    )
