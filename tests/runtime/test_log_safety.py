"""The daemon's log, read from its stderr: no value stalls it, no value forges a line or
reaches the terminal as a control, and the webhook secret is redacted from every path shape."""

from __future__ import annotations

import json
import logging
import re
import socket
from types import SimpleNamespace
from urllib.parse import quote, quote_plus, unquote

import httpx
import pytest
from daemons import SAMPLE, SECRET, LogLines, chat_started, wait_for, write_setup

from rulekit.config import LoggingSettings
from rulekit.loading import open_config
from rulekit.runtime.logs import configure_logging, secret_values

PING_RULES = """\
- name: Pong
  on: {channel: online-chat, event: created}
  if: message.text.startswith('ping')
  do:
    - autoreply: {text: "pong"}
"""

# a log line: "2026-11-30 07:22:01,123 INFO rulekit.access: ..." or a traceback line
_LINE_START = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+ [\w.]+: |    ")
_TERMINAL_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def body(message_id: str, name: str, text: str = "x", client_id: str = "client-1") -> bytes:
    data = json.loads(json.dumps(SAMPLE))
    data["message"].update(id=message_id, text=text)
    data["client"].update(id=client_id, displayedName=name, chatId=f"chat-{client_id[:20]}")
    return json.dumps(data).encode()


def raw_request(port: int, request: str) -> bytes:
    """Send ``request`` byte for byte (no client normalises its path) and read the answer: up
    to the end of its body when it gives a Content-Length (a connection the server keeps open,
    as after a refused WebSocket handshake, is not waited out), else until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode("latin-1"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            head, found, body = answer.partition(b"\r\n\r\n")
            if found:
                length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                if length is not None and len(body) >= int(length.group(1)):
                    break
    return answer


def post(port: int, path: str, payload: bytes = b"{}") -> int:
    answer = raw_request(
        port,
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n" + payload.decode(),
    )
    return int(answer.split(b" ", 2)[1])


def log_lines(output: str) -> list[str]:
    return output.split("\n")


def assert_clean_log(output: str) -> None:
    """Every line starts as a record or an indented traceback line; no terminal control."""
    for line in log_lines(output):
        if line:
            assert _LINE_START.match(line), f"a line no record started: {line[:200]!r}"
    found = _TERMINAL_CONTROLS.search(output)
    assert found is None, f"{found.group()!r} in the log" if found else ""


ADVERSARIAL = {
    "a word without @": lambda n: "a" * n,
    "an address with a long dotted domain": lambda n: "a@" + "b." * (n // 2),
    "many @": lambda n: "a@" * (n // 2),
    "webhooks without slashes": lambda n: "webhooks/" + "webhooks" * (n // 8),
    "slashes after webhooks": lambda n: "webhooks" + "/" * n,
    "percent signs": lambda n: "%25" * (n // 3),
    "escape sequences": lambda n: "\x1b[2J\x1b]52;c;QUFB\x07\u202e\r\n" * (n // 16),
}


def test_huge_adversarial_values_never_stall_the_daemon(tmp_path, processes, chatra):
    """Ids and names of 20,000 to 1,000,000 characters in webhook bodies, and request paths as
    long as the server takes (64 KiB), of each shape that made a log pattern backtrack: the
    daemon keeps answering and processing other webhooks, and logs each line cut."""
    config = write_setup(tmp_path, PING_RULES, chatra=chatra)
    process = processes(config).wait_ready()
    for number, (shape, make) in enumerate(ADVERSARIAL.items()):
        for size in (20_000, 1_000_000):
            value = make(size)
            payload = body(value, value, client_id=f"{shape[:10]}-{size}")
            if len(payload) > 4_000_000:  # over the body limit once JSON-escaped
                value = make(size // 4)
                payload = body(value, value, client_id=f"{shape[:10]}-{size}")
            answer = httpx.post(process.webhook_url, content=payload, timeout=60)
            assert answer.status_code == 200, (shape, size, answer.text)
        for _ in range(3):
            path = "/" + quote(make(60_000), safe="/@.")[:60_000]
            assert post(process.port, path) in (404, 405)
        # meanwhile, other webhooks are answered and processed
        ping = body(f"ping-{number}", f"Visitor {number}", "ping", f"visitor-{number}")
        assert httpx.post(process.webhook_url, content=ping, timeout=30).status_code == 200
        wait_for(lambda n=number + 1: len(chatra.sent) >= n, timeout=60)
    assert [m["text"] for m in chatra.sent] == ["pong"] * len(ADVERSARIAL)
    output = process.output()
    assert_clean_log(output)
    # the long paths' lines were cut
    assert max(len(line) for line in log_lines(output)) < 20_000
    assert "more characters]" in output


FORGED = "\n2026-01-01 00:00:00,000 INFO rulekit.access: POST /forged 200"


CONTROLS = "\r\x1b[2J\x1b]52;c;QUFB\x07\x9b31m\u202eevil\u2028"
HOSTILE_PATHS = (
    "/healthz%0A2026-01-01%2000:00:00,000%20INFO%20rulekit.access:%20GET%20/forged%20200",
    "/x%0D%1B%5B2J%1B%5D52;c;QUFB%07%C2%9B31m%E2%80%AEevil%E2%80%A8",
    f"/webhooks/online-chat%0A{SECRET}",
)


def send_hostile_requests(process, chatra) -> str:
    """Hostile paths and event data to a daemon; its whole log once it has stopped."""
    for path in HOSTILE_PATHS:
        assert post(process.port, path) in (404, 405)
    value = CONTROLS + FORGED
    payload = body("m-" + value, value, "ping " + value, "client-" + value)
    assert httpx.post(process.webhook_url, content=payload).status_code == 200
    bad = httpx.post(process.webhook_url, content=b'{"eventName": "\\u001b[2J"}')
    assert bad.status_code in (200, 400)
    ping = body("ping", "Visitor", "ping", "visitor")
    assert httpx.post(process.webhook_url, content=ping).status_code == 200
    wait_for(lambda: len(chatra.sent) == 2)
    assert process.terminate() == 0
    return process.output()


def test_control_characters_in_paths_and_event_data_are_escaped(tmp_path, processes, chatra):
    config = write_setup(tmp_path, PING_RULES, chatra=chatra)
    output = send_hostile_requests(processes(config).wait_ready(), chatra)
    assert_clean_log(output)
    assert "\\x1b[2J" in output and "\\u202e" in output  # shown, escaped
    assert "\\n2026-01-01 00:00:00,000 INFO rulekit.access" in output
    assert "/forged" not in "".join(line[:60] for line in log_lines(output))


@pytest.mark.slow
def test_json_log_lines_stay_one_valid_object_each(tmp_path, processes, chatra):
    config = write_setup(tmp_path, PING_RULES, chatra=chatra, extra="logging: {format: json}\n")
    output = send_hostile_requests(processes(config).wait_ready(), chatra)
    found = _TERMINAL_CONTROLS.search(output)
    assert found is None, repr(found.group()) if found else ""
    records = [json.loads(line) for line in log_lines(output) if line]
    messages = [record["message"] for record in records if record["logger"] == "rulekit.access"]
    assert any("\x1b[2J\x1b]52;c;QUFB\x07\x9b31m\u202eevil" in text for text in messages)
    assert any("\n2026-01-01" in text for text in messages)  # inside one record, as data
    assert SECRET not in output


SHAPES = [
    f"/webhooks/online-chat/{SECRET}",
    f"/webhooks/online-chat//{SECRET}",
    f"/webhooks//online-chat/{SECRET}",
    f"//webhooks/online-chat/{SECRET}",
    f"/webhooks/online-chat/{SECRET}/",
    f"/webhooks/online-chat/{SECRET}?x=1",
    f"/webhooks/online-chat/{SECRET}%3Fx",
    f"/webhooks/online-chat/%3F{SECRET}",
    f"/webhooks/online-chat?{SECRET}",
    f"/webhooks/online-chat/x?secret={SECRET}",
    f"/webhooks/{SECRET}",
    f"/webhooks/online-chat/%{ord(SECRET[0]):02X}{SECRET[1:]}",
    f"/webhooks/online-chat/{''.join(f'%{b:02x}' for b in SECRET.encode())}",
    f"/webhooks%2Fonline-chat%2F{SECRET}",
    f"/webhooks/online-chat/%25{ord(SECRET[0]):02X}{SECRET[1:]}",
    f"/WEBHOOKS/online-chat/{SECRET}",
    f"/webhooks/online-chat/{SECRET}%20trailing",
    f"/webhooks/online-chat/{SECRET[:8]}%0A{SECRET[8:]}",
    f"/other/{SECRET}",
    f"/healthz?{quote(SECRET)}",
]


@pytest.mark.slow
def test_the_webhook_secret_is_redacted_from_every_path_shape(tmp_path, processes, chatra):
    config = write_setup(tmp_path, PING_RULES, chatra=chatra, extra="logging: {level: debug}\n")
    process = processes(config).wait_ready()
    for path in SHAPES:
        post(process.port, path, chat_started(1))
        # the same paths as WebSocket handshakes, which uvicorn itself answers and may log
        raw_request(
            process.port,
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n",
        )
    assert httpx.post(process.webhook_url, content=chat_started(2, "ping")).status_code == 200
    wait_for(lambda: len(chatra.sent) >= 1)
    process.terminate()
    output = process.output()
    assert output.count("rulekit.access") >= len(SHAPES)
    assert "INFO uvicorn.error" in output  # uvicorn's own lines are in the log too
    decoded = output
    for _ in range(3):
        decoded = unquote(decoded)
        assert SECRET not in decoded
    assert SECRET[:8] not in output
    assert "/webhooks/online-chat/***" in output


def test_the_secret_is_redacted_from_exception_messages_and_fields(tmp_path, restore_logging):
    _, config = open_config(str(write_setup(tmp_path)))
    stream = LogLines()
    configure_logging(LoggingSettings(), stream, secrets=lambda: secret_values(config))
    logger = logging.getLogger("rulekit.test")
    for shape in SHAPES:
        try:
            raise ValueError(f"cannot reach http://host{shape} for {SECRET}")
        except ValueError:
            logger.error("failed at %s", shape, exc_info=True, extra={"fields": {"url": shape}})
    output = stream.text
    assert output.count("Traceback") == len(SHAPES)
    for _ in range(3):
        output = unquote(output)
        assert SECRET not in output
    assert_clean_log(stream.text)


def test_every_configured_secret_is_redacted(tmp_path, chatra, restore_logging):
    slack = SimpleNamespace(token="xoxb-slack-token-1234", base_url="http://127.0.0.1:9/")
    telegram = SimpleNamespace(token="123456:telegram-token-abcd", base_url="http://127.0.0.1:9/")
    config_path = write_setup(tmp_path, chatra=chatra, slack=slack, telegram=telegram)
    _, config = open_config(str(config_path))
    secrets = [SECRET, chatra.secret_key, slack.token, telegram.token]
    assert sorted(secret_values(config)) == sorted(secrets)
    stream = LogLines()
    configure_logging(LoggingSettings(format="json"), stream, lambda: secret_values(config))
    logger = logging.getLogger("rulekit.test")
    for secret in secrets:
        logger.warning("calling https://api/bot%s/send", secret, extra={"fields": {"k": secret}})
        logger.warning("encoded: %s", quote(quote(secret, safe=""), safe=""))
    records = [json.loads(line) for line in stream.text.splitlines()]
    assert len(records) == 2 * len(secrets)
    for secret in secrets:
        assert secret not in unquote(unquote(stream.text))


def test_warnings_of_other_libraries_are_cleaned_too(tmp_path, restore_logging):
    _, config = open_config(str(write_setup(tmp_path)))
    stream = LogLines()
    configure_logging(LoggingSettings(), stream, lambda: secret_values(config))
    logging.getLogger("httpx").warning("retrying %s\n%s", f"/x/{SECRET}", "\x1b[2J\u202e")
    logging.getLogger("asyncio").info("not shown: below warning")
    assert stream.text.count("\n") == 1
    assert " WARNING httpx: retrying /x/***\\n\\x1b[2J\\u202e" in stream.text
    assert SECRET not in stream.text


@pytest.fixture
def restore_logging():
    """Put back the handlers ``configure_logging`` replaces."""
    names = ["", "rulekit", "rulekit.sdk", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


# a secret holding what JSON, repr and URLs escape: a quote, a backslash, a slash, a space,
# non-ASCII and a bidi mark
ODD_SECRET = 'pa"ss\\wörd/ x+y\u200f7'
HEADER_TOKEN = "tok/+n=%2F-0123456789"  # a header sends ASCII only: what URLs escape


def odd_secret_config(tmp_path):
    quoted = json.dumps(ODD_SECRET)
    config_path = write_setup(
        tmp_path,
        extra=(
            "integrations:\n"
            "  webhooks:\n"
            "    crm:\n"
            "      url: https://crm.example/hooks/abcdef123456\n"
            f"      secret: {quoted}\n"
            f'      headers: {{Authorization: "Bearer {HEADER_TOKEN}"}}\n'
        ),
    )
    _, config = open_config(str(config_path))
    assert ODD_SECRET in secret_values(config)
    return config


def quoted_forms(secret: str) -> list[str]:
    """The forms in which a log line may quote ``secret`` without meaning to hide it."""
    forms = set()
    for text in (secret, quote(secret, safe=""), quote(secret, safe="/"), quote_plus(secret)):
        forms.update((text, repr(text)[1:-1]))
        for ascii_only in (True, False):
            encoded = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
            forms.update((encoded, encoded.replace("/", "\\/")))
    return sorted(forms)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_form_of_a_configured_secret_reaches_a_log_line(tmp_path, restore_logging, fmt):
    """A secret quoted JSON-escaped, repr-quoted, percent-encoded (or with ``+``), in a field
    (a string, or in a list or mapping) or an exception message: no line holds any of those
    forms of it, in text and JSON lines alike; nor of the token of a ``Bearer`` header."""
    config = odd_secret_config(tmp_path)
    stream = LogLines()
    configure_logging(LoggingSettings(format=fmt), stream, lambda: secret_values(config))
    logger = logging.getLogger("rulekit.test")
    secrets = (ODD_SECRET, HEADER_TOKEN)
    for secret in secrets:
        for form in quoted_forms(secret):
            logger.warning('the service answered: {"error": "bad key %s"}', form)
            logger.warning("x", extra={"fields": {"answer": form, "deep": {"list": [form]}}})
            try:
                raise ValueError(f"refused {form}")
            except ValueError:
                logger.error("call failed", exc_info=True)
    output = stream.text
    lines = [line for line in output.splitlines() if not line.startswith("    ")]
    assert len(lines) == 3 * sum(len(quoted_forms(secret)) for secret in secrets)
    if fmt == "json":  # still one JSON object a line
        records = [json.loads(line) for line in output.splitlines()]
        assert {"message", "level"} <= set(records[0])
        decoded = json.dumps(records, ensure_ascii=False)  # the values as read
        output += "\n" + "\n".join(str(record) for record in records) + decoded
    folded = output.casefold()
    for secret in secrets:
        for form in quoted_forms(secret):
            assert form.casefold() not in folded, f"{form!r} in the log"
    assert "***" in output


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_that_is_a_number_or_the_storage_password_is_redacted(
    tmp_path, restore_logging, fmt
):
    """A numeric secret logged as a number (no string to clean) and the password of the
    storage URL (percent-encoded in it) are redacted too; JSON lines stay valid."""
    config_path = write_setup(
        tmp_path,
        extra="integrations: {webhooks: {crm: {url: 'https://x.example/h', secret: '987654321'}}}",
    )
    text = config_path.read_text().replace(
        "sqlite:///rulekit.sqlite3", "postgresql://rk:p%40ss-w0rd-4321@127.0.0.1:9/x"
    )
    config_path.write_text(text)
    _, config = open_config(str(config_path))
    stream = LogLines()
    configure_logging(LoggingSettings(format=fmt), stream, lambda: secret_values(config))
    logger = logging.getLogger("rulekit.test")
    logger.warning("x", extra={"fields": {"code": 987654321, "codes": [987654321]}})
    logger.warning("connecting failed: password p@ss-w0rd-4321 refused")
    if fmt == "json":
        assert [json.loads(line)["level"] for line in stream.text.splitlines()] == ["warning"] * 2
    assert "987654321" not in stream.text and "p@ss-w0rd-4321" not in stream.text
    assert "***" in stream.text


def test_a_record_that_two_handlers_write_is_hidden_by_the_one_that_may_not_show_content():
    """A handler that may show content, run first, must not leave its rendering (the
    exception's message written into the text) for another handler that may not."""
    from rulekit.runtime.logs import CleanRecords, TextFormatter

    logger = logging.getLogger("rulekit-test-two-handlers")
    logger.propagate = False
    shown, hidden = LogLines(), LogLines()
    handlers = []
    for stream, emails in ((shown, False), (hidden, True)):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(TextFormatter())
        handler.addFilter(CleanRecords(emails=emails))
        logger.addHandler(handler)
        handlers.append(handler)
    try:
        logger.warning("lost %d: %s", 1, ValueError("cannot keep 'card 4111 1111 1111 1111'"))
        logger.warning("lost %d: %s", 2, ValueError("cannot keep 'card 4111 1111 1111 1111'"))
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert shown.text.count("card 4111") == 2  # the test can fail: content is there to hide
    assert "4111" not in hidden.text and hidden.text.count("ValueError: [hidden]") == 2
    assert "lost 1:" in hidden.text and "lost 2:" in hidden.text
