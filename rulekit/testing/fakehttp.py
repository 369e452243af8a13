"""A small, real HTTP server on loopback that records what it receives.

Fake Slack, Telegram and Chatra APIs build on it: real SDK clients talk to it through their
``base_url``; tests read :attr:`FakeService.requests` and script failures (429 with Retry-After,
5xx, bad tokens, hangs) with :meth:`FakeService.script`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    header_lines: list[tuple[str, str]] = field(default_factory=list)
    """Every header as received, in order (``headers`` keeps one per lower-cased name)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def form(self) -> dict[str, str]:
        """The body as form fields (SDKs often post ``application/x-www-form-urlencoded``)."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}

    @property
    def data(self) -> dict[str, Any]:
        """The body's fields, whatever its encoding (JSON or form)."""
        content_type = self.headers.get("content-type", "")
        if "json" in content_type:
            return self.json or {}
        if "multipart" in content_type:
            return _multipart_fields(self.body, content_type)
        return self.form


def _multipart_fields(body: bytes, content_type: str) -> dict[str, str]:
    boundary = content_type.split("boundary=")[-1].strip('"').encode()
    fields: dict[str, str] = {}
    for part in body.split(b"--" + boundary):
        head, _, value = part.partition(b"\r\n\r\n")
        if b'name="' not in head:
            continue
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = value.rstrip(b"\r\n").decode()
    return fields


@dataclass
class Response:
    """What the fake answers: a status, a JSON body, headers, and an optional delay."""

    status: int = 200
    body: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Responder = Callable[[RecordedRequest], Response]


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many clients connect at once in pacing tests and benchmarks


class FakeService:
    """A threaded HTTP server on 127.0.0.1 with a default responder and scripted answers.

    Use as a context manager (or call :meth:`start` / :meth:`stop`). ``base_url`` is where it
    listens. Scripted responses (:meth:`script`) are used first, in order, then the default.
    """

    def __init__(self, responder: Responder | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self._scripted: deque[Response] = deque()
        self._responder = responder or (lambda request: Response())
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one write per answer, no 40 ms delayed-ACK stall

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = RecordedRequest(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                    list(self.headers.items()),
                )
                response = service._answer(request)
                if response.delay:
                    service._closing.wait(response.delay)
                payload = json.dumps(response.body).encode()
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in response.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a test of timeouts)
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # behaviour -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None, "the fake service is not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def release(self) -> None:
        """Answer now the requests held by a response's ``delay`` (and hold no later one): a
        test can hang a call for as long as it needs, then let it finish."""
        self._closing.set()

    def script(self, *responses: Response) -> None:
        """Answer the next requests with these responses, in order."""
        with self._lock:
            self._scripted.extend(responses)

    def _answer(self, request: RecordedRequest) -> Response:
        with self._lock:
            self.requests.append(request)
            if self._scripted:
                return self._scripted.popleft()
        return self._responder(request)

    def paths(self) -> list[str]:
        """The paths of the requests received so far (without query strings)."""
        return [urlsplit(r.path).path for r in self.requests]
