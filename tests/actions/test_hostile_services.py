"""The Slack and Telegram actions against APIs that misbehave on purpose (a raw HTTP server on
loopback): an error page that is not JSON, an answer far larger than any real one, an answer
that cannot be read after the call was taken. Each ends with an outcome its status decides,
reading at most MAX_ANSWER bytes, and a call the service took is never made again."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import socketserver
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from action_helpers import make_context, run

from rulekit.actions.answers import MAX_ANSWER
from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.errors import (
    MAX_ACTION_ERROR,
    MAX_RETRY_AFTER,
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
    heads: list[list[str]]
    sent: int
    encodings: dict[str, str]
    """The Content-Encoding answered to a method, when one is."""
    extra: dict[str, str]
    """Headers answered to every method besides those."""


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
            server.heads.append(lines)
            status, body = server.answer(method)
            with contextlib.suppress(OSError):  # the client hung up: that is the point
                _send(self.request, server, status, body, server.encodings.get(method))


def _send(
    sock: socket.socket, server: _Server, status: int, body: bytes, encoding: str | None = None
) -> None:
    coding = f"Content-Encoding: {encoding}\r\n" if encoding else ""
    coding += "".join(f"{name}: {value}\r\n" for name, value in server.extra.items())
    sock.sendall(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{coding}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    view = memoryview(body)
    for start in range(0, len(body), 65536):
        sock.sendall(view[start : start + 65536])
        server.sent += min(65536, len(body) - start)


@contextmanager
def api(answer: Answer) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.answer, server.calls, server.heads, server.sent = answer, [], [], 0
    server.encodings, server.extra = {}, {}
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


def test_telegram_never_inflates_a_compressed_answer() -> None:
    """The bound counted the bytes that came, and httpx inflated them after it: 250 KB of
    gzip from the API (or whatever stands at its base_url) became 256 MB in memory, and the
    bound let through a MiB of it, a GB. The action asks for no compression; an answer
    compressed anyway is not read, as one over the bound is not."""
    bomb = gzip.compress(b"0" * (256 * 2**20), compresslevel=9)
    answers = {"getMe": (200, ME), "sendMessage": (200, bomb)}
    with api(lambda method: answers[method]) as server:
        server.encodings["sendMessage"] = "gzip"
        tracemalloc.start()
        try:
            exc = telegram_failure(server)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(exc, PermanentActionError) and exc.status == 200  # the message was taken
    assert "gzip-encoded: not inflated" in exc.message
    assert peak < 20 * 2**20
    assert server.calls == ["getMe", "sendMessage"]
    for head in server.heads:
        assert "accept-encoding: identity" in [line.lower() for line in head]


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


class _Lost(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    how: str
    calls: list[str]


class _LostHandler(socketserver.BaseRequestHandler):
    """Answers ``getMe`` in full; any other call by its ``how``: ``cut``, a 200 head and part
    of its body, then the connection closed; ``stalled``, the same, then nothing more;
    ``silent``, nothing at all (no head)."""

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Lost)
        self.request.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        method = data.split(b" ")[1].decode().rstrip("/").rsplit("/", 1)[-1]
        server.calls.append(method)
        with contextlib.suppress(OSError):
            if method == "getMe":
                # The connection ends after this answer, so say so: a client that kept it for its
                # next call would write that call to a closed socket, which the service never got.
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(ME)}\r\nConnection: close\r\n\r\n"
                self.request.sendall(head.encode() + ME)
                return
            if server.how.startswith("redirect:"):  # to the address after the colon
                where = server.how.removeprefix("redirect:")
                self.request.sendall(
                    f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {where}{method}\r\n"
                    "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )
                return
            if server.how != "silent":
                self.request.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b'Content-Length: 1000\r\nConnection: close\r\n\r\n{"ok": tr'
                )
            if server.how == "cut":
                self.request.close()
                return
            while self.request.recv(65536):  # until the client gives up
                pass


@contextmanager
def lost_answers(how: str) -> Iterator[str]:
    server = _Lost(("127.0.0.1", 0), _LostHandler)
    server.how, server.calls = how, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = base_url(server)  # type: ignore[arg-type]
    _SERVERS[url] = server
    try:
        yield url
    finally:
        del _SERVERS[url]
        server.shutdown()
        server.server_close()


LOST_TIMEOUT = 0.5
_SERVERS: dict[str, _Lost] = {}
"""The fakes of :func:`lost_answers` under way, by their URL."""


def _send_through(client: str, url: str) -> ActionError:
    """One message sent through ``client`` to ``url``: the error the dispatcher would get."""
    if client == "slack":
        action: Any = Slack(
            SlackIntegration(token="xoxb-t", base_url=url + "/api/"), timeout=LOST_TIMEOUT
        )
        call: Any = lambda: action.execute(SlackParams(channel="C1", text="x"), make_context())  # noqa: E731
    elif client == "telegram":
        action = Telegram(
            TelegramIntegration(token="123:abcdefghijk", base_url=url + "/bot"),
            timeout=LOST_TIMEOUT,
        )
        call = lambda: action.execute(TelegramParams(chat_id=5, text="x"), make_context())  # noqa: E731
    elif client == "chatra":
        from pydantic import SecretStr
        from rulekit_chatra.api import ChatraAPI

        api_client = ChatraAPI(url, "pub", SecretStr("sec"))
        action = Slack()  # only its event loop's lifetime is used by run()
        call = lambda: api_client.send_message({"text": "x"}, timeout=LOST_TIMEOUT)  # noqa: E731
    else:
        from pydantic import SecretStr
        from rulekit_telegram.botapi import BotAPI, BotAPIError, BotUnreachable, classify

        bot = BotAPI(url, SecretStr("123:abc"))
        action = Slack()

        async def call() -> Any:
            try:
                return await bot.call("sendMessage", {"text": "x"}, timeout=LOST_TIMEOUT)
            except (BotAPIError, BotUnreachable) as exc:
                raise classify(exc) from None

    with pytest.raises(ActionError) as caught:
        run(action, call)
    return caught.value


CLIENTS = ["slack", "telegram", "chatra", "telegram-bot"]


@pytest.mark.parametrize("how", ["cut", "stalled"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_call_whose_2xx_answer_is_lost_midway_is_not_made_again(client, how) -> None:
    """The service answered 200 (it took the message), then the answer's body was lost: the
    connection closed, or the rest never came within the call's time. Slack, Telegram and
    Chatra take no idempotency key, so a retry would send the message twice: the call is
    final, saying it may have been made."""
    with lost_answers(how) as url:
        exc = _send_through(client, url)
    assert isinstance(exc, PermanentActionError), exc
    assert exc.status == 200 and "not retried" in exc.message, exc.message


@pytest.mark.parametrize("client", CLIENTS)
def test_a_redirect_is_not_followed(client) -> None:
    """A service (or whatever answers at its base_url) that answers a call with a redirect
    does not get the client's message sent where it points: the call fails for good with the
    redirect's status, naming where it pointed, and the other address gets nothing."""
    with lost_answers("silent") as elsewhere, lost_answers(f"redirect:{elsewhere}/") as url:
        exc = _send_through(client, url)
        calls = _servers_calls(elsewhere)
    assert calls == [], calls
    assert isinstance(exc, PermanentActionError), exc
    assert exc.status == 307, exc


def _servers_calls(url: str) -> list[str]:
    return _SERVERS[url].calls


@pytest.mark.parametrize("client", CLIENTS)
def test_a_call_that_got_no_answer_at_all_is_retried(client) -> None:
    with lost_answers("silent") as url:
        exc = _send_through(client, url)
    assert isinstance(exc, RetryableActionError), exc


def _autoreply_through(channel: str, url: str, how_long: float) -> ActionError:
    """One autoreply through a real provider of ``channel`` whose service is at ``url``, with
    the action's timeout ``how_long``: the error the dispatcher would get."""
    from pydantic import SecretStr
    from rulekit_chatra.provider import ChatraProvider
    from rulekit_chatra.settings import ChatraSettings
    from rulekit_telegram.provider import TelegramProvider
    from rulekit_telegram.settings import TelegramSettings

    from rulekit.actions.autoreply import Autoreply, AutoreplyParams
    from rulekit.channels.base import ChannelContext
    from rulekit.directory import Directory
    from rulekit.event import Event

    directory = Directory([], ["support"])
    if channel == "chatra":
        settings: Any = ChatraSettings(
            base_url=url,
            public_key="pub",
            secret_key=SecretStr("sec"),
            default_agent_id="dflt",
            default_group="support",
        )
        provider: Any = ChatraProvider(ChannelContext("online-chat", settings, directory))
    else:
        settings = TelegramSettings(
            token=SecretStr("123:abc"),
            base_url=url,
            webhook_secret="s" * 32,
            default_group="support",
        )
        provider = TelegramProvider(ChannelContext("online-chat", settings, directory))
    event = Event(
        channel="online-chat",
        event="created",
        conversation={"id": "conv-1", "status": "open", "assignee": None},
        client={"id": "42"},
    )
    action = Autoreply(timeout=how_long)
    context = make_context(event, provider=provider)
    with pytest.raises(ActionError) as caught:
        run(action, lambda: action.execute(AutoreplyParams(text="Hi"), context))
    return caught.value


@pytest.mark.parametrize("channel", ["chatra", "telegram-bot"])
def test_an_autoreply_whose_2xx_answer_stalls_past_its_timeout_is_not_sent_again(
    channel,
) -> None:
    """The provider's client and the action's own backstop share one timeout: the action's
    timer, started first, ends the call; the service had answered 200 (it took the reply), so
    the client would get it twice from a retry."""
    with lost_answers("stalled") as url:
        exc = _autoreply_through(channel, url, LOST_TIMEOUT)
        calls = _servers_calls(url)
    assert [c for c in calls if c != "getMe"] in (["messages"], ["sendMessage"]), calls
    assert isinstance(exc, PermanentActionError), exc
    assert exc.status == 200 and "not retried" in exc.message, exc.message


@pytest.mark.parametrize("channel", ["chatra", "telegram-bot"])
def test_an_autoreply_that_got_no_answer_at_all_is_retried(channel) -> None:
    with lost_answers("silent") as url:
        exc = _autoreply_through(channel, url, LOST_TIMEOUT)
    assert isinstance(exc, RetryableActionError), exc


def _ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}).encode()


def _flood(wait: Any) -> bytes:
    body = {"ok": False, "error_code": 429, "parameters": {"retry_after": wait}}
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "kind", "wait"),
    [
        # a 2xx the client cannot read: Telegram took the message, which is not sent again
        (200, b'{"ok": true}', PermanentActionError, None),
        (200, _ok(True), PermanentActionError, None),
        (200, _ok({}), PermanentActionError, None),
        (200, _ok([]), PermanentActionError, None),
        (200, _ok({"message_id": 1, "date": "x", "chat": {"id": 5}}), PermanentActionError, None),
        (200, b'{"ok": false}', PermanentActionError, None),
        # flood control whose wait is too long to count, or no number: the chat waits
        (429, _flood(1e400).replace(b"Infinity", b"1e400"), RetryableActionError, MAX_RETRY_AFTER),
        (429, _flood(10**15), RetryableActionError, MAX_RETRY_AFTER),
        (429, _flood("soon"), RetryableActionError, None),
        (429, _flood(-5), RetryableActionError, 0.0),
        # a refusal the client cannot read is final as its status says; a proxy's 408 is not
        (400, b'{"ok": false, "description": 5}', PermanentActionError, None),
        (408, b"<html>Request Timeout</html>", RetryableActionError, None),
        (408, b'{"ok": false, "error_code": 408, "description": "x"}', RetryableActionError, None),
        (400, b"[]", PermanentActionError, None),
    ],
)  # fmt: skip
def test_telegram_answers_the_client_cannot_read_are_classified_by_their_status(
    status, body, kind, wait
) -> None:
    """python-telegram-bot raises what is no TelegramError (KeyError, OverflowError...) for
    an answer that is not the Bot API's: the outcome is still the status's, never a retry of
    a message Telegram took, nor a flood control that does not pause the chat."""
    with api(lambda method: (200, ME) if method == "getMe" else (status, body)) as server:
        exc = telegram_failure(server)
    assert type(exc) is kind, exc
    assert exc.status == status, exc
    assert exc.retry_after == wait, exc
    if status == 200:
        assert "not retried" in exc.message, exc.message


def test_a_garbled_get_me_sends_nothing_and_is_retried() -> None:
    with api(lambda method: (200, _ok(True)) if method == "getMe" else (200, b"")) as server:
        exc = telegram_failure(server)
        calls = list(server.calls)
    assert calls == ["getMe"], calls
    assert isinstance(exc, RetryableActionError), exc


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b'{"ok": false, "error": "x", "response_metadata": "oops"}', PermanentActionError),
        (200, b'{"ok": false, "error": {"code": 1}}', PermanentActionError),
        (429, b'{"ok": false, "error": "ratelimited", "response_metadata": []}', RetryableActionError),  # noqa: E501
        (500, b'{"ok": false, "response_metadata": null}', RetryableActionError),
        (400, b'{"ok": false, "response_metadata": {"messages": 5}}', PermanentActionError),
    ],
)  # fmt: skip
def test_slack_answers_not_shaped_as_slack_s_are_classified_by_their_status(
    status, body, kind
) -> None:
    """An answer whose fields are not what Slack writes fails the call as its status says,
    never as a bug in the action (which the dispatcher would retry, without the 429's pause)."""
    with api(lambda method: (status, body)) as server:
        exc = slack_failure(server)
    assert type(exc) is kind, exc
    assert exc.status == status, exc


@pytest.mark.parametrize("body", [b"<html>proxy</html>", b"", b"[1, 2]", b'"ok"'])
def test_a_2xx_answer_to_a_slack_post_that_is_not_slack_s_is_final_and_says_so(body) -> None:
    with api(lambda method: (200, body)) as server:
        exc = slack_failure(server)
        calls = list(server.calls)
    assert calls == ["chat.postMessage"], calls
    assert isinstance(exc, PermanentActionError), exc
    assert "not Slack's" in exc.message and "not retried" in exc.message, exc.message


@pytest.mark.parametrize("client", CLIENTS)
def test_a_proxy_s_408_is_retried_by_every_client(client) -> None:
    """A 408 (the request came too slowly: a proxy's, before the service) is no refusal of the
    message: another attempt may go."""
    body = b"<html>408 Request Timeout</html>"
    with api(lambda method: (200, ME) if method == "getMe" else (408, body)) as server:
        exc = _send_through(client, base_url(server))
    assert isinstance(exc, RetryableActionError), exc
    assert exc.status == 408, exc


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, PermanentActionError), (429, RetryableActionError), (500, RetryableActionError),
     (400, PermanentActionError)],
)  # fmt: skip
@pytest.mark.parametrize("client", ["slack", "telegram"])
def test_an_answer_that_is_not_utf_8_is_classified_by_its_status(client, status, kind) -> None:
    """slack-sdk decodes an answer as UTF-8 and lets the UnicodeDecodeError out: taken for a
    bug, the post answered 200 was made again."""
    body = b'\xff\xfe{"ok": true, "ts": "1.2", "result": {}}'
    with api(lambda method: (200, ME) if method == "getMe" else (status, body)) as server:
        exc = slack_failure(server) if client == "slack" else telegram_failure(server)
    assert type(exc) is kind, exc
    assert exc.status == status, exc
    if status == 200:
        assert "not retried" in exc.message, exc.message


@pytest.mark.parametrize("status", [429, 503])
def test_a_telegram_wait_said_in_a_retry_after_header_is_honoured(status) -> None:
    """A proxy in front of the Bot API (or a local Bot API server behind one) says its wait in
    a Retry-After header, not in the Bot API's parameters."""
    with api(lambda method: (200, ME) if method == "getMe" else (status, b"<html>")) as server:
        server.extra["Retry-After"] = "45"
        exc = telegram_failure(server)
    assert isinstance(exc, RetryableActionError), exc
    assert (exc.status, exc.retry_after) == (status, 45.0), exc


DEEP = b'{"ok": true, "result": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("client", "status"),
    [(c, s) for c in CLIENTS for s in (200, 500) if (c, s) != ("chatra", 200)],
)
def test_an_answer_nested_past_the_json_parser_is_classified_by_its_status(client, status) -> None:
    """JSON nested deeper than Python's parser goes raises a RecursionError, no ValueError:
    taken for a bug, a reply answered 200 was sent again. (Chatra's 200 that is not JSON is
    its message taken: see the next test.)"""
    with api(lambda method: (200, ME) if method == "getMe" else (status, DEEP)) as server:
        exc = _send_through(client, base_url(server))
    assert isinstance(exc, PermanentActionError if status == 200 else RetryableActionError), exc
    assert exc.status == status, exc


def test_a_chatra_200_nested_past_the_json_parser_is_the_message_taken() -> None:
    from pydantic import SecretStr
    from rulekit_chatra.api import ChatraAPI

    with api(lambda method: (200, DEEP)) as server:
        chatra = ChatraAPI(base_url(server), "pub", SecretStr("sec"))
        answer = run(Slack(), lambda: chatra.send_message({"text": "x"}, timeout=5))
        calls = list(server.calls)
    assert calls == ["messages"] and answer["status"] == 200, calls
