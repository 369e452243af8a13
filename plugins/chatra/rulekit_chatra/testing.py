"""A fake Chatra REST API for tests: a real HTTP server on loopback that records what it gets.

Built on :class:`rulekit.testing.FakeService`. It checks the ``Chatra.Simple`` authorization
header (401 otherwise), accepts ``POST /messages/`` (under any base path) with a ``clientId``
and a ``text`` of 1 to 5000 characters (UTF-16 code units; 400 otherwise) and answers with the
created message, as Chatra does; it serves ``GET`` and ``PUT /clients/{id}`` for the visitors
it knows (:meth:`FakeChatra.add_client`; 404 for others).
Failures are scripted::

    with FakeChatra() as chatra:
        chatra.rate_limit(retry_after=7)   # the next request gets a 429
        chatra.rate_limit(3, method="GET") # the next GET (a client fetch) gets a 429
        chatra.fail(503)                   # the one after, a 503
        chatra.hang(5)                     # then one that answers only after 5 seconds
        ... ChatraSettings(base_url=chatra.base_url, **chatra.keys) ...
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from rulekit.testing import FakeService, RecordedRequest, Response


class FakeChatra(FakeService):
    """Chatra's REST API, as far as rulekit uses it."""

    def __init__(self, public_key: str = "pubKEY123", secret_key: str = "s3cretKEY456") -> None:
        super().__init__(self._respond)
        self.public_key = public_key
        self.secret_key = secret_key
        self._ids = itertools.count(1)
        self.clients: dict[str, dict[str, Any]] = {}
        """Visitors by id, as ``GET`` and ``PUT /clients/{id}`` see them (:meth:`add_client`)."""
        self._limits: list[tuple[str, Response]] = []
        self._limits_lock = threading.Lock()

    @property
    def keys(self) -> dict[str, str]:
        """The keys this fake accepts, as channel settings name them."""
        return {"public_key": self.public_key, "secret_key": self.secret_key}

    @property
    def sent(self) -> list[dict[str, Any]]:
        """The JSON bodies of every ``POST /messages/`` received, in order."""
        return [
            r.json
            for r in self.requests
            if r.method == "POST" and urlsplit(r.path).path.endswith("/messages/")
        ]

    # scripted failures -----------------------------------------------------------------------
    def rate_limit(self, retry_after: int | str | None = 7, *, method: str | None = None) -> None:
        """Answer the next request with 429 and this Retry-After (None: without one); with
        ``method``, the next request of that method (``GET``: a client fetch, ``POST``: a
        reply), whatever comes before it."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        response = Response(429, {"message": "Too many requests"}, headers)
        if method is None:
            self.script(response)
        else:
            with self._limits_lock:
                self._limits.append((method.upper(), response))

    def fail(self, status: int = 500, message: str = "Internal server error") -> None:
        """Answer the next request with this status and message."""
        self.script(Response(status, {"message": message}))

    def hang(self, seconds: float) -> None:
        """Answer the next request only after ``seconds`` (a client's timeout should fire)."""
        self.script(Response(200, {}, delay=seconds))

    # the API ---------------------------------------------------------------------------------
    @property
    def client_updates(self) -> list[tuple[str, dict[str, Any]]]:
        """The client id and JSON body of every ``PUT /clients/{id}`` received, in order."""
        return [
            (unquote(urlsplit(r.path).path.rsplit("/", 1)[1]), r.json)
            for r in self.requests
            if r.method == "PUT" and "/clients/" in urlsplit(r.path).path
        ]

    def add_client(self, client_id: str, **data: Any) -> None:
        """Know a visitor (what ``GET /clients/{id}`` answers), e.g. ``name=``, ``email=``."""
        self.clients[client_id] = {"id": client_id, **data}

    def _respond(self, request: RecordedRequest) -> Response:
        with self._limits_lock:
            for index, (method, response) in enumerate(self._limits):
                if method == request.method:
                    del self._limits[index]
                    return response
        expected = f"Chatra.Simple {self.public_key}:{self.secret_key}"
        if request.headers.get("authorization") != expected:
            return Response(401, {"error": "Unauthorized", "message": "Invalid API keys"})
        path = urlsplit(request.path).path
        if "/clients/" in path and request.method in ("GET", "PUT"):
            return self._client(request.method, unquote(path.rsplit("/", 1)[1]), request)
        if request.method != "POST" or not path.endswith("/messages/"):
            return Response(404, {"error": "Not found"})
        try:
            body = request.json
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("clientId") or not body.get("text"):
            return Response(400, {"error": "Bad request", "message": "clientId and text required"})
        if (
            not isinstance(body["text"], str)
            or len(body["text"].encode("utf-16-le", "surrogatepass")) > 10000
        ):
            return Response(400, {"error": "Bad request", "message": "text: 1 to 5000 characters"})
        message = {
            "id": f"fakeMsg{next(self._ids):010d}",
            "type": "agent",
            "clientId": body["clientId"],
            "text": body["text"],
            "createdAt": int(time.time() * 1000),
        }
        for key in ("agentId", "agentName", "receivedFrom"):
            if key in body:
                message[key] = body[key]
        return Response(200, message)

    def _client(self, method: str, client_id: str, request: RecordedRequest) -> Response:
        known = self.clients.get(client_id)
        if known is None:
            return Response(404, {"error": "Not found", "message": "Client not found"})
        if method == "GET":
            return Response(200, known)
        try:
            body = request.json
        except ValueError:
            body = None
        allowed = {"name", "email", "phone", "notes"}
        if not isinstance(body, dict) or not body or set(body) - allowed:
            return Response(400, {"error": "Bad request", "message": "name, email, phone, notes"})
        for key, value in body.items():
            if value is None:
                known.pop(key, None)
            else:
                known[key] = value
        return Response(200, known)
