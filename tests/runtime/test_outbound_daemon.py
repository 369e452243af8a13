"""webhook and email end to end: a real daemon, its durable outbox (SQLite, and PostgreSQL when
``RULEKIT_TEST_POSTGRES`` is set), a real HTTP receiver and a real SMTP server on loopback."""

from __future__ import annotations

import base64
import logging
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from daemons import chat_fragment, chat_started, read, wait_for, write_setup
from scaffold import REPO

from rulekit.testing.fakehttp import FakeService, Response

# the SMTP client and server come with the install: an environment made before they were
# added skips these tests instead of failing to collect them (reinstall with ".[test]")
pytest.importorskip("aiosmtplib")
pytest.importorskip("aiosmtpd")
from rulekit.testing.fake_smtp import FakeSmtp

SECRET = "whsec-daemon-0123456789"
PASSWORD = "smtp-daemon-pw-Zq81"
TIMER_RESOLUTION = 0.01
"""How early an event loop timer may fire (asyncio's clock resolution, with margin)."""

RULES = """\
- name: Tell the CRM and the team
  on: {channel: online-chat, event: created}
  do:
    - webhook: {to: crm}
    - email:
        to: [ops@shop.example]
        subject: "New chat: {{ message.text }}"
        text: "{{ client.display_name }} wrote {{ message.text }}"
"""


def verify_function():
    text = (REPO / "docs" / "configuration.md").read_text()
    namespace: dict = {}
    exec(text.split("```python\n", 1)[1].split("```", 1)[0], namespace)
    return namespace["verify"]


def outbound_setup(
    folder: Path, receiver: FakeService, smtp: FakeSmtp, storage: str | None = None, **smtp_options
) -> Path:
    smtp_settings = {"host": "127.0.0.1", "port": smtp.port, "security": "none"}
    smtp_settings.update({"from": "bot@shop.example", **smtp_options})
    extra = (
        "integrations:\n"
        "  webhooks:\n"
        f"    crm: {{url: '{receiver.base_url}/hooks/rulekit', secret: {SECRET}}}\n"
        f"  smtp: {smtp_settings!r}\n"
    )
    config = write_setup(folder, RULES, dispatcher={"backoff_max": 0.2}, extra=extra)
    if storage is not None:
        config.write_text(
            config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
        )
    return config


def jobs_by_action(server) -> dict:
    with server.daemon.store.transaction() as state:
        return {job.action: job for job in state.jobs(status="done")} | {
            job.action: job for job in state.jobs(status="dead")
        }


def delivered_once_after_a_failure(tmp_path: Path, serve, storage: str | None = None) -> None:
    with FakeService() as receiver, FakeSmtp() as smtp:
        receiver.script(Response(503, "busy"))
        smtp.drop()
        server = serve(outbound_setup(tmp_path, receiver, smtp, storage))
        assert httpx.post(server.webhook_url, content=chat_started(1, "Hi")).status_code == 200
        jobs = wait_for(lambda: (found := jobs_by_action(server)) and len(found) == 2 and found)

        first, second = receiver.requests
        assert first.headers["x-rulekit-delivery"] == second.headers["x-rulekit-delivery"]
        verify = verify_function()
        for request in (first, second):
            stamp = int(request.headers["x-rulekit-timestamp"])
            assert verify(SECRET.encode(), httpx.Headers(request.headers), request.body, now=stamp)
        assert second.json["version"] == 1 and second.json["message"]["text"] == "Hi"
        assert [m.message["Subject"] for m in smtp.messages] == ["New chat: Hi"]

        webhook, email = jobs["webhook"], jobs["email"]
        assert webhook.status == "done" and webhook.result == {"status": 200, "body": "{}"}
        assert email.status == "done" and email.result["to"] == ["ops@shop.example"]
        with server.daemon.store.transaction() as state:
            tries = [a.outcome for a in state.attempts(webhook.id)]
            error = state.attempts(webhook.id)[0].error
            mail_tries = [a.outcome for a in state.attempts(email.id)]
        assert tries == ["retry", "done"] and error == "webhook 'crm': HTTP 503: \"busy\""
        assert mail_tries == ["retry", "done"]


def test_delivered_through_the_sqlite_outbox_once_each_after_a_failure(tmp_path, serve):
    delivered_once_after_a_failure(tmp_path, serve)


def test_an_email_sent_again_after_its_answer_was_lost_is_the_same_message(tmp_path, serve):
    # the server took the message and the connection broke before its answer: the retry
    # delivers it again (SMTP has no other key), under the same Message-ID, which the
    # recipients' mail systems drop as a repeat (it was a new random one on every attempt)
    with FakeService() as receiver, FakeSmtp() as smtp:
        smtp.lose_reply()
        server = serve(outbound_setup(tmp_path, receiver, smtp))
        for n, text in enumerate(("Hi", "Hello")):
            assert httpx.post(server.webhook_url, content=chat_started(n, text)).status_code == 200
        wait_for(lambda: len(smtp.messages) == 3)
        ids: dict[str, list[str]] = {}
        for received in smtp.messages:
            ids.setdefault(received.message["Subject"], []).append(received.message["Message-ID"])
        twice = [found for found in ids.values() if len(found) == 2]
        once = [found for found in ids.values() if len(found) == 1]
        assert len(twice) == 1 and len(once) == 1, ids
        assert twice[0][0] == twice[0][1]  # one job: one Message-ID
        assert once[0][0] != twice[0][0]  # another job: its own
        assert twice[0][0].endswith("@shop.example>")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A storage URL on a schema of this test's own, dropped afterwards."""
    server = os.environ.get("RULEKIT_TEST_POSTGRES")
    if not server:
        pytest.skip("set RULEKIT_TEST_POSTGRES to a PostgreSQL URL to run this test")
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    try:
        psycopg.connect(server, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"the PostgreSQL server in RULEKIT_TEST_POSTGRES is unreachable: {exc}")
    from rulekit.store.postgres import drop_schema

    separator = "&" if "?" in server else "?"
    url = f"{server}{separator}schema=rk_test_{uuid.uuid4().hex[:12]}"
    yield url
    drop_schema(url)


def test_delivered_through_the_postgresql_outbox_once_each_after_a_failure(
    tmp_path, serve, postgres_url
):
    delivered_once_after_a_failure(tmp_path, serve, postgres_url)


def test_a_refused_smtp_login_is_a_clear_dead_letter_and_the_password_is_nowhere(
    tmp_path, serve, caplog
):
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "tls"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with FakeService() as receiver, FakeSmtp(username="bot", password="right", tls=tls) as smtp:
        config = outbound_setup(
            tmp_path,
            receiver,
            smtp,
            security="starttls",
            username="bot",
            password=PASSWORD,
            ca_file=str(cert),
        )
        server = serve(config)
        httpx.post(server.webhook_url, content=chat_started(1, "Hi"))
        jobs = wait_for(lambda: (found := jobs_by_action(server)) and len(found) == 2 and found)
        email = jobs["email"]
        assert email.status == "dead"
        assert email.last_error.startswith(
            "the SMTP server 127.0.0.1 refused the username and password (535"
        )
        assert smtp.logins and not smtp.messages
    forms = [PASSWORD, base64.b64encode(PASSWORD.encode()).decode()]
    forms.append(base64.b64encode(f"\0bot\0{PASSWORD}".encode()).decode())
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("rulekit.sqlite3*"))
    assert stored
    for form in forms:
        assert form.encode() not in stored
        assert form not in caplog.text


def test_a_webhook_429_holds_the_target_in_order_and_a_404_is_final_with_its_answer(
    tmp_path, serve
):
    """The target answers 429 with Retry-After as an HTTP date: no request reaches it before
    that date, and the next chat's call follows its retry (one target, one order). A 404 is a
    dead letter at once, its status and the start of the answer in the audit."""
    from email.utils import format_datetime

    dates: list[datetime] = []

    def answer(request) -> Response:
        if dates:  # the first call only: 429 until a date three seconds on, in whole seconds
            return Response()
        dates.append(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3))
        return Response(429, "slow down", {"Retry-After": format_datetime(dates[0], True)})

    with FakeService(answer) as receiver, FakeSmtp() as smtp:
        server = serve(outbound_setup(tmp_path, receiver, smtp))
        for n in (1, 2):
            body = chat_started(n, f"Hi {n}")
            assert httpx.post(server.webhook_url, content=body).status_code == 200
        wait_for(lambda: len(receiver.requests) == 3, timeout=30)
        refused, *later = receiver.requests
        assert [r.json["message"]["text"] for r in receiver.requests] == ["Hi 1", "Hi 1", "Hi 2"]
        # the fake records monotonic times: on that clock, the date is `until - offset`
        until, offset = dates[0].timestamp(), time.time() - time.monotonic()
        assert refused.at + offset < until
        for request in later:
            assert request.at + offset >= until - TIMER_RESOLUTION, request.at + offset - until

        receiver.script(Response(404, "no such hook: " + "x" * 500))
        assert httpx.post(server.webhook_url, content=chat_started(3, "Hi 3")).status_code == 200
        wait_for(lambda: len(receiver.requests) == 4, timeout=30)

        def dead() -> list:
            with server.daemon.store.transaction() as state:
                return [job for job in state.jobs(status="dead") if job.action == "webhook"]

        [job] = wait_for(dead, timeout=30)
        assert job.attempts == 1
        assert job.last_error.startswith("webhook 'crm': HTTP 404: \"no such hook: xxx")
        assert len(job.last_error) < 300  # the first bytes, not the whole answer


@pytest.mark.slow
def test_a_call_that_waited_for_its_pacing_slot_is_not_timed_out_for_it(tmp_path, serve):
    """Three chats, each calling the CRM webhook and emailing ops, one call per three seconds
    to each, with timeouts of a second: the later calls wait longer for their slot than their
    timeout, and each is made once, on its first attempt."""
    with FakeService() as receiver, FakeSmtp() as smtp:
        config = outbound_setup(tmp_path, receiver, smtp, timeout=0.25, rate_limit="1/3s")
        target = f"secret: {SECRET}}}"
        config.write_text(
            config.read_text().replace(target, f"secret: {SECRET}, timeout: 1, rate_limit: 1/3s}}")
        )
        server = serve(config)
        for n in (1, 2, 3):
            body = chat_started(n, f"Hi {n}")
            assert httpx.post(server.webhook_url, content=body).status_code == 200

        def done() -> list:
            with server.daemon.store.transaction() as state:
                return state.jobs(status="done")

        jobs = wait_for(lambda: len(found := done()) == 6 and found, timeout=60)
        assert sorted((job.action, job.attempts) for job in jobs) == [
            ("email", 1),
            ("email", 1),
            ("email", 1),
            ("webhook", 1),
            ("webhook", 1),
            ("webhook", 1),
        ]
        assert len(receiver.requests) == 3 and len(smtp.messages) == 3


GREYLISTED_RULES = """\
- name: Tell two teams
  on: {channel: online-chat, event: created}
  do:
    - email:
        to: [ops@shop.example, lead@partner.example]
        subject: "New chat: {{ message.text }}"
        text: "{{ client.display_name }} wrote {{ message.text }}"
"""


def test_a_recipient_greylisted_while_another_took_the_message_gets_it_on_the_retry(
    tmp_path: Path, serve
) -> None:
    """A server that takes the message for one recipient and answers "later" (greylisting)
    for another: the message counted as sent, and the greylisted recipient never got it. It is
    now retried for that recipient alone; the one who has it gets no second copy."""
    with FakeService() as receiver, FakeSmtp() as smtp:
        smtp.refuse("lead@partner.example", "450 4.2.0 Greylisted, try again later")
        config = outbound_setup(tmp_path, receiver, smtp)
        config.parent.joinpath("rules.d", "rules.yaml").write_text(GREYLISTED_RULES)
        server = serve(config)
        assert httpx.post(server.webhook_url, content=chat_started(1, "Hi")).status_code == 200
        email = wait_for(lambda: jobs_by_action(server).get("email"))
        assert [m.recipients for m in smtp.messages] == [
            ["ops@shop.example"],
            ["lead@partner.example"],
        ]
        first, second = (m.message["Message-ID"] for m in smtp.messages)
        assert first == second  # one message, in two deliveries
        assert email.status == "done" and email.result["to"] == ["lead@partner.example"]
        assert email.result["earlier"] == ["ops@shop.example"]
        with server.daemon.store.transaction() as state:
            tries = state.attempts(email.id)
        assert [a.outcome for a in tries] == ["retry", "done"]
        assert "Greylisted" in (tries[0].error or "")


REPLY_AND_MAIL = """\
- name: Answer and tell the team
  on: {channel: online-chat, event: [created, message]}
  do:
    - autoreply: {text: "Got it"}
    - email: {to: [ops@shop.example], subject: "Chat", text: "{{ message.text }}"}
"""


def test_an_email_waiting_out_its_retries_holds_up_no_reply_to_the_client(
    tmp_path: Path, serve, chatra
) -> None:
    """The email went in the conversation's lane (whose jobs run one at a time, in order), so
    while the SMTP server was down and the email waited for its next attempt (up to 300 s
    between attempts, eight of them), the client's next messages got no answer. An email whose
    recipients do not depend on an earlier assign now has a lane of its own."""
    with FakeSmtp() as smtp:
        smtp.fail("451 4.3.0 Try again later", times=100)
        smtp_settings = {"host": "127.0.0.1", "port": smtp.port, "security": "none"}
        smtp_settings["from"] = "bot@shop.example"
        config = write_setup(
            tmp_path,
            REPLY_AND_MAIL,
            chatra=chatra,
            dispatcher={"backoff_base": 120, "backoff_max": 300},
            extra=f"integrations:\n  smtp: {smtp_settings!r}\n",
        )
        server = serve(config)
        assert httpx.post(server.webhook_url, content=chat_started(1, "Hi")).status_code == 200
        wait_for(lambda: len(chatra.sent) == 1 and smtp.attempts >= 1)
        assert httpx.post(server.webhook_url, content=chat_fragment(1, 1)).status_code == 200
        wait_for(lambda: len(chatra.sent) == 2, timeout=60)  # not after the email's retry
        emails = [j for j in read(tmp_path, lambda s: s.jobs(limit=10)) if j.action == "email"]
        assert {job.status for job in emails} == {"pending"} and smtp.messages == []
