"""The Slack and Telegram actions against APIs that misbehave on purpose (a raw HTTP server on
loopback): an error page that is not JSON, an answer far larger than any real one, an answer
that cannot be read after the call was taken. Each ends with an outcome its status decides,
reading at most MAX_ANSWER bytes, and a call the service took is never made again."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from action_helpers import make_context, run

from rulekit.actions.answers import MAX_ANSWER
from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.errors import (
    MAX_ACTION_ERROR,
    ActionError,
    PermanentActionError,
    RetryableActionError,
)

Answer = Callable[[str], tuple[int, bytes]]
"""The status and body to answer a request for an API method (its path's last segment)."""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    answer: Answer
    calls: list[str]
    sent: int


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        self.request.settimeout(10)
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                buffered += chunk
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                (
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            while len(buffered) < length:
                buffered += self.request.recv(65536)
            buffered = buffered[length:]
            method = lines[0].split()[1].rstrip("/").rsplit("/", 1)[-1]
            server.calls.append(method)
            status, body = server.answer(method)
            with contextlib.suppress(OSError):  # the client hung up: that is the point
                _send(self.request, server, status, body)


def _send(sock: socket.socket, server: _Server, status: int, body: bytes) -> None:
    sock.sendall(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    view = memoryview(body)
    for start in range(0, len(body), 65536):
        sock.sendall(view[start : start + 65536])
        server.sent += min(65536, len(body) - start)


@contextmanager
def api(answer: Answer) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.answer, server.calls, server.sent = answer, [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def base_url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


HUGE = 64 * MAX_ANSWER
ME = json.dumps(
    {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "b", "username": "b"}}
).encode()


def slack_failure(server: _Server) -> ActionError:
    action = Slack(SlackIntegration(token="xoxb-t", base_url=base_url(server) + "/api/"))
    with pytest.raises(ActionError) as caught:
        run(action, lambda: action.execute(SlackParams(channel="C1", text="x"), make_context()))
    return caught.value


def telegram_failure(server: _Server) -> ActionError:
    action = Telegram(
        TelegramIntegration(token="123:abcdefghijk", base_url=base_url(server) + "/bot")
    )
    with pytest.raises(ActionError) as caught:
        run(action, lambda: action.execute(TelegramParams(chat_id=5, text="x"), make_context()))
    return caught.value


def test_slack_5xx_that_is_not_json_is_retried() -> None:
    """A proxy's error page labelled JSON was read as no status at all: dead-lettered."""
    with api(lambda method: (502, b"<html>502 Bad Gateway</html>")) as server:
        exc = slack_failure(server)
    assert isinstance(exc, RetryableActionError) and exc.status == 502


@pytest.mark.parametrize(
    ("status", "kind"), [(200, PermanentActionError), (503, RetryableActionError)]
)
def test_slack_reads_no_more_of_an_answer_than_max_answer(status, kind) -> None:
    body = b'{"ok": false, "error": "' + b"x" * HUGE + b'"}'
    with api(lambda method: (status, body)) as server:
        exc = slack_failure(server)
    assert type(exc) is kind and exc.status == status
    assert f"is over {MAX_ANSWER} bytes" in exc.message and len(exc.message) < 300
    assert server.sent < HUGE // 2  # the client stopped reading: the server could not send it all


def test_telegram_answer_to_a_sent_message_that_is_not_json_is_not_retried() -> None:
    """Telegram took the message (200); the answer is garbled on its way. Retrying would
    send the message twice."""
    answers = {"getMe": (200, ME), "sendMessage": (200, b"<html>ok</html>")}
    with api(lambda method: answers[method]) as server:
        exc = telegram_failure(server)
    assert isinstance(exc, PermanentActionError) and exc.status == 200
    assert "not retried" in exc.message
    assert server.calls == ["getMe", "sendMessage"]


def test_telegram_reads_no_more_of_an_answer_than_max_answer() -> None:
    body = b'{"ok": true, "result": {"message_id": 5, "text": "' + b"x" * HUGE + b'"}}'
    answers = {"getMe": (200, ME), "sendMessage": (200, body)}
    with api(lambda method: answers[method]) as server:
        exc = telegram_failure(server)
    assert isinstance(exc, PermanentActionError) and exc.status == 200
    assert f"is over {MAX_ANSWER} bytes" in exc.message
    assert server.sent < HUGE // 2


def test_an_error_quoting_a_long_answer_is_cut() -> None:
    """Under MAX_ANSWER, an answer's error code is still no place for 500 KB: what an action's
    error keeps (the audit, the dead letters, the log) is cut at MAX_ACTION_ERROR."""
    body = b'{"ok": false, "error": "' + b"y" * 500_000 + b'"}'
    with api(lambda method: (400, body)) as server:
        exc = slack_failure(server)
    assert isinstance(exc, PermanentActionError)
    assert len(exc.message) < MAX_ACTION_ERROR + 40
    assert exc.message.startswith("Slack chat.postMessage failed: yyy")
    assert exc.message.endswith(" more characters]")
