"""A fake Slack Web API: ``chat.postMessage`` (and ``auth.test``), on a real loopback server.

Point slack-sdk at it with ``AsyncWebClient(token=..., base_url=fake.base_url)``. It checks the
bearer token, knows which channels exist (all, unless ``channels`` is given), records every
request, and can be told to fail the next calls::

    with FakeSlack(token="xoxb-test") as slack:
        slack.rate_limit(retry_after=2, channel="C1")   # 429 + Retry-After for C1's next post
        slack.server_error()                            # 500 for the next post, any channel
        slack.hang(5)                                   # the next post answers after 5 s
        ...
        [(m.channel, m.text) for m in slack.messages()]
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from rulekit.testing.fakehttp import FakeService, RecordedRequest, Response


@dataclass(frozen=True)
class SlackMessage:
    """A ``chat.postMessage`` call the fake received (accepted or not)."""

    channel: str
    text: str
    blocks: Any
    at: float
    status: int
    error: str | None
    request: RecordedRequest


class FakeSlack:
    """A recording fake of the Slack Web API on 127.0.0.1."""

    def __init__(self, token: str = "xoxb-fake-token", channels: Iterable[str] | None = None):
        self.token = token
        self.channels = set(channels) if channels is not None else None
        self.service = FakeService(self._respond)
        self._failures: list[tuple[str | None, Response]] = []
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._outcomes: dict[int, tuple[int, str | None]] = {}

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeSlack:
        self.service.start()
        return self

    def stop(self) -> None:
        self.service.stop()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to give slack-sdk as ``base_url`` (ends with ``/``, like Slack's own)."""
        return f"{self.service.base_url}/api/"

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.service.requests

    # scripting -------------------------------------------------------------------------------
    def fail(self, response: Response, *, channel: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` posts (to ``channel``, or any) with ``response``."""
        with self._lock:
            self._failures.extend([(channel, response)] * times)

    def rate_limit(self, retry_after: float | str = 1, *, channel: str | None = None) -> None:
        """A 429 with ``Retry-After`` (seconds, or a text as it is: an HTTP date), as Slack
        answers when a channel gets too many posts."""
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        self.fail(
            Response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": value}),
            channel=channel,
        )

    def server_error(self, status: int = 500, *, channel: str | None = None) -> None:
        self.fail(Response(status, {"ok": False, "error": "internal_error"}), channel=channel)

    def hang(self, seconds: float, *, channel: str | None = None) -> None:
        """Answer the next post only after ``seconds`` (a client with a timeout gives up)."""
        self.fail(Response(200, self._posted("C0", "", None), delay=seconds), channel=channel)

    # reading ---------------------------------------------------------------------------------
    def messages(
        self, channel: str | None = None, *, accepted: bool | None = None
    ) -> list[SlackMessage]:
        """The ``chat.postMessage`` calls received, in order (for one channel if given)."""
        out: list[SlackMessage] = []
        for request in list(self.service.requests):
            if urlsplit(request.path).path != "/api/chat.postMessage":
                continue
            data = request.data
            status, error = self._outcomes.get(id(request), (0, None))
            message = SlackMessage(
                str(data.get("channel")),
                data.get("text") or "",
                data.get("blocks"),
                request.at,
                status,
                error,
                request,
            )
            if channel is not None and message.channel != channel:
                continue
            if accepted is not None and (status == 200 and error is None) != accepted:
                continue
            out.append(message)
        return out

    # answering -------------------------------------------------------------------------------
    def _respond(self, request: RecordedRequest) -> Response:
        response = self._decide(request)
        body = response.body if isinstance(response.body, dict) else {}
        error = None if body.get("ok") else body.get("error", "unknown")
        with self._lock:
            self._outcomes[id(request)] = (response.status, error)
        return response

    def _decide(self, request: RecordedRequest) -> Response:
        method = urlsplit(request.path).path.removeprefix("/api/")
        auth = request.headers.get("authorization", "")
        if not auth:
            return Response(200, {"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.token}":
            return Response(200, {"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return Response(200, {"ok": True, "user_id": "U0RULEKIT", "team_id": "T0FAKE"})
        if method != "chat.postMessage":
            return Response(200, {"ok": False, "error": "unknown_method"})
        data = request.data
        channel = str(data.get("channel") or "")
        with self._lock:
            for index, (only, response) in enumerate(self._failures):
                if only is None or only == channel:
                    del self._failures[index]
                    return response
        if not channel or (self.channels is not None and channel not in self.channels):
            return Response(200, {"ok": False, "error": "channel_not_found"})
        if not data.get("text") and not data.get("blocks"):
            return Response(200, {"ok": False, "error": "no_text"})
        too_long = _over_limit(data.get("blocks"))
        if too_long:
            return Response(
                200,
                {
                    "ok": False,
                    "error": "invalid_blocks",
                    "response_metadata": {"messages": [f"[ERROR] {too_long}"]},
                },
            )
        return Response(200, self._posted(channel, data.get("text") or "", data.get("blocks")))

    def _posted(self, channel: str, text: str, blocks: Any) -> dict[str, Any]:
        ts = f"1700000000.{next(self._ts):06d}"
        message = {"type": "message", "text": text, "ts": ts, "bot_id": "B0RULEKIT"}
        if blocks:
            message["blocks"] = blocks
        return {"ok": True, "channel": channel, "ts": ts, "message": message}


_LIMITS = {("header", "text"): 150, ("section", "fields"): 2000, ("button", "text"): 75}


def _over_limit(node: Any, kind: str = "", key: str = "") -> str | None:
    """What Slack would say of a Block Kit text over its length limit (3,000 characters for a
    text object, less in a header, a section's fields, a button), or None."""
    if isinstance(node, list):
        return next((e for e in (_over_limit(i, kind, key) for i in node) if e), None)
    if not isinstance(node, dict):
        return None
    own = node.get("type")
    if own in ("plain_text", "mrkdwn") and isinstance(node.get("text"), str):
        limit = _LIMITS.get((kind, key), 3000)
        if len(node["text"]) > limit:
            return f"must be less than {limit + 1} characters [json-pointer:/{key}/text]"
        return None
    own = own if isinstance(own, str) else kind
    return next((e for e in (_over_limit(v, own, k) for k, v in node.items()) if e), None)
