"""A small client of Chatra's REST API: what rulekit needs: sending a chat message, reading and
changing a visitor's data.

Failures are classified for the dispatcher: rate limits (429, with the service's Retry-After),
server errors (5xx), timeouts and connection errors are worth retrying; any other refusal (bad
keys, unknown client) is permanent. Messages keep what Chatra said, never the secret key.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import SecretStr
from rulekit.actions.answers import (
    AnswerTooLarge,
    bounded_response_class,
    forget_answer,
    lost_answer,
    unreadable,
)
from rulekit.actions.rates import retry_after
from rulekit.errors import ActionError, PermanentActionError, RetryableActionError

if TYPE_CHECKING:
    import aiohttp
    import httpx

MAX_DETAIL = 300
"""How much of the service's error message is kept."""


def _client_path(client_id: str) -> str:
    """``/clients/{id}``, the id one percent-encoded path segment; an id the HTTP client would
    resolve away (``.``, ``..``, also written ``%2E``) is refused: a website binds visitors with
    ids of its own choosing, and ``/clients/..`` is a call to another endpoint, not a client."""
    if client_id.replace("%2E", ".").replace("%2e", ".") in ("", ".", ".."):
        raise PermanentActionError(f"{client_id!r} cannot name a client in a Chatra API call")
    return f"/clients/{quote(client_id, safe='')}"


class ChatraAPI:
    """Chatra's REST API at ``base_url``, authenticated with the account's API keys
    (``Authorization: Chatra.Simple <public key>:<secret key>``)."""

    def __init__(
        self,
        base_url: str,
        public_key: str,
        secret_key: SecretStr,
        *,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_key = public_key
        self._secret_key = secret_key
        self._session = session
        """A session kept between calls (its connections are reused); None: one per call."""

    def __repr__(self) -> str:
        return f"ChatraAPI({self.base_url!r}, public_key={self.public_key!r})"

    async def send_message(self, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """``POST /messages/``: write to a visitor as an agent; return the created message.

        Raises :class:`RetryableActionError` or :class:`PermanentActionError`.
        """
        return await self.call("POST", "/messages/", body, timeout=timeout, what="the message")

    async def update_client(
        self, client_id: str, body: dict[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        """``PUT /clients/{id}``: change a visitor's name, email, phone or notes (only the keys
        sent; null clears one); return the visitor as Chatra has it now."""
        path = _client_path(client_id)
        return await self.call("PUT", path, body, timeout=timeout, what="the change")

    async def get_client(self, client_id: str, *, timeout: float) -> dict[str, Any]:
        """``GET /clients/{id}``: one visitor, as Chatra has it."""
        path = _client_path(client_id)
        return await self.call("GET", path, None, timeout=timeout, what="the request")

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        """One request; its JSON answer, or the error it means (see :meth:`failure`)."""
        import aiohttp  # here, not at the top: `rulekit check` and `test` load this module

        secret = self._secret_key.get_secret_value()
        headers = {"Authorization": f"Chatra.Simple {self.public_key}:{secret}"}
        forget_answer()
        try:
            if self._session is not None:
                response = await self._send(self._session, method, path, body, headers, timeout)
            else:
                async with aiohttp.ClientSession(
                    response_class=bounded_response_class()
                ) as session:
                    response = await self._send(session, method, path, body, headers, timeout)
        except TimeoutError:
            message = f"Chatra did not answer within {timeout:g}s"
            raise _lost(method, message) or RetryableActionError(message) from None
        except AnswerTooLarge as exc:
            raise unreadable(f"Chatra: {exc}", exc.status) from None
        except aiohttp.ClientError as exc:
            detail = self._scrub(str(exc) or type(exc).__name__)
            message = f"cannot reach Chatra at {self.base_url}: {detail}"
            raise _lost(method, message) or RetryableActionError(message) from None
        if response.is_success:
            return _json_object(response)
        raise self.failure(response, what)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
        timeout: float,
    ) -> httpx.Response:
        import aiohttp
        import httpx

        # aiohttp makes the call (httpx's pool costs milliseconds of CPU per request under
        # concurrency); the answer is read into an httpx.Response for the classification below
        async with session.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as answer:
            content = await answer.read()
            return httpx.Response(
                answer.status, headers=list(answer.headers.items()), content=content
            )

    def failure(self, response: httpx.Response, what: str = "the message") -> ActionError:
        """The error a non-2xx response means."""
        status = response.status_code
        detail = self._scrub(_detail(response))
        said = f" (HTTP {status}): {detail}" if detail else f" (HTTP {status})"
        if status == 429:
            wait = retry_after(response.headers.get("Retry-After"), time.time())
            hint = f"; retry after {wait:g}s" if wait is not None else ""
            return RetryableActionError(
                f"Chatra is rate limiting{said}{hint}",
                retry_after=wait,
                scope="service",
                status=status,
            )
        if status == 408:  # a proxy's "the request came too slowly": another attempt may go
            return RetryableActionError(f"Chatra failed{said}", status=status)
        if status >= 500:
            # Chatra down (a 503 in maintenance) may say when to come back: the account waits
            # that long, rather than spend the replies' attempts on the outage
            wait = retry_after(response.headers.get("Retry-After"), time.time())
            hint = f"; retry after {wait:g}s" if wait is not None else ""
            return RetryableActionError(
                f"Chatra failed{said}{hint}",
                retry_after=wait,
                scope="service",
                status=status,
            )
        if status in (401, 403):
            return PermanentActionError(f"Chatra rejected the API keys{said}", status=status)
        return PermanentActionError(f"Chatra refused {what}{said}", status=status)

    def _scrub(self, text: str) -> str:
        secret = self._secret_key.get_secret_value()
        return text.replace(secret, "**********") if secret else text


def _detail(response: httpx.Response) -> str:
    """What the service said about a failure, on one line."""
    try:
        data = response.json()
    except (ValueError, RecursionError):  # (nested past the parser: not an answer)
        data = response.text
    if isinstance(data, dict):
        for key in ("message", "error", "description", "errors", "reason"):
            if data.get(key):
                data = data[key]
                break
    text = data if isinstance(data, str) else str(data)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _lost(method: str, message: str) -> ActionError | None:
    """The error of a request whose answer was lost after its head (:func:`lost_answer`): for
    one that changes something (a message sent), what its status means, a 2xx final; None for
    a GET, which is only read again."""
    return None if method == "GET" else lost_answer(message)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (ValueError, RecursionError):
        return {"status": response.status_code, "text": response.text[:MAX_DETAIL]}
    return data if isinstance(data, dict) else {"status": response.status_code, "response": data}
