"""``rulekit forget`` after rules of every action kind ran for a client: the client's values,
each carrying a marker of its own, are in no byte of the store afterwards, whatever action put
them where (Slack, Telegram, email to the client and to the team, the webhook's event body and
an XML text, a receiver echoing what it got, tags and fields, ``update_client``, ``assign``, a
no-reply timer) and in whatever form the action stored them (an email address whose domain is
sent as its A-labels, ``xn--``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from daemons import SAMPLE, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra
from test_forget_every_form import postgres_dump, sqlite_bytes

from rulekit.cli.main import cli
from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.fakehttp import FakeService, RecordedRequest, Response

pytest.importorskip("aiosmtpd")
from rulekit.testing.fake_smtp import FakeSmtp

CLIENT = "zed00client0id0000000000000000000000000"
MARKERS = {
    "name": "Zoë Quarkmrkname",
    "email": "quark.mrkmail@exämple-shop.io",  # a domain outside ASCII: sent as xn--...
    "phone": "+1 555 0100 mrkphone",
    "notes": "mrknotes: likes tea",
    "plan": "Platinum mrkplan",
    "ip": "203.0.113.77",
    "city": "Mrkcity Town",
    "text": "Where is my order mrktext?",
}
"""Each personal value, with a marker (``mrk...``) found in any form that keeps its letters."""
TOKENS = ("quarkmrkname", "mrkmail", "mrkphone", "mrknotes", "mrkplan", "203.0.113.77")
TOKENS += ("mrkcity", "mrktext")

RULES = """\
- name: Every action
  on: {channel: online-chat, event: created}
  do:
    - slack:
        channel: "#support"
        text: "{{ client.name }} ({{ client.email }}): {{ message.text }}"
    - telegram:
        chat_id: "-100111"
        parse_mode: HTML
        text: "<b>{{ client.name }}</b> {{ client.phone }}"
    - email:
        to: [client]
        subject: "Hello {{ client.name }}"
        text: "You wrote: {{ message.text }}"
    - email:
        to: [ops@shop.example]
        subject: "New chat from {{ client.email }}"
        text: "{{ client.custom.plan }} {{ client.notes }} {{ client.ip }} {{ client.city }}"
    - webhook: {to: crm}
    - webhook:
        to: crm
        content_type: application/xml
        text: "<chat><who>{{ client.name }}</who><said>{{ message.text }}</said></chat>"
    - tag: {add: ["{{ client.custom.plan }}"]}
    - set: {priority: high, fields: {who: "{{ client.name }}", mail: "{{ client.email }}"}}
    - update_client: {notes: "{{ client.notes }} / {{ message.text }}"}
    - assign: {group: support, strategy: round_robin}
    - autoreply: {text: "Hello {{ client.name }}, you wrote: {{ message.text }}"}
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: 1s
  unless: conversation.status == 'closed'
  do:
    - slack: {channel: "#late", text: "No answer for {{ client.name }}: {{ message.text }}"}
- name: What changed
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  do:
    - slack: {channel: "#changes", text: "{{ changed }} {{ conversation.fields }}"}
"""


def first_message() -> bytes:
    body = json.loads(json.dumps(SAMPLE))
    body["message"] = {
        "id": "msgZed1",
        "type": "client",
        "text": MARKERS["text"],
        "createdAt": int(time.time() * 1000),
    }
    body["client"].update(
        {
            "id": CLIENT,
            "chatId": "chat-zed",
            "displayedName": MARKERS["name"],
            "ip": MARKERS["ip"],
            "city": MARKERS["city"],
            "info": {
                "name": MARKERS["name"],
                "email": MARKERS["email"],
                "phone": MARKERS["phone"],
                "notes": MARKERS["notes"],
                "plan": MARKERS["plan"],
            },
        }
    )
    return json.dumps(body).encode()


def echo(request: RecordedRequest) -> Response:
    """A receiver answering with what it got (a CRM echoing the record it made)."""
    return Response(200, {"received": request.body.decode()})


def found(text: str) -> set[str]:
    folded = text.casefold()
    return {token for token in TOKENS if token in folded}


def run_everything(tmp_path: Path, serve, storage: str | None) -> tuple[Path, object, str]:
    chatra, slack, telegram = FakeChatra(), FakeSlack(), FakeTelegram()
    receiver, smtp = FakeService(echo), FakeSmtp()
    fakes = (chatra, slack, telegram, receiver, smtp)
    for fake in fakes:
        fake.start()
    extra = (
        "  webhooks:\n"
        f"    crm: {{url: '{receiver.base_url}/hooks', secret: whsec-forget-0123456789}}\n"
        f"  smtp: {{host: 127.0.0.1, port: {smtp.port}, security: none,"
        " from: bot@shop.example}\n"
    )
    config = write_setup(tmp_path, RULES, chatra=chatra, slack=slack, telegram=telegram)
    config.write_text(config.read_text() + extra)
    if storage is not None:
        config.write_text(config.read_text().replace("sqlite:///rulekit.sqlite3", storage))
    chatra.add_client(CLIENT)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=first_message()).status_code == 200

    def settled() -> bool:
        with server.daemon.store.transaction() as state:
            pending = state.inbox_items(status="pending") or state.jobs(status="pending")
            late = [j for j in state.jobs(status="done") if j.rule == "Nobody answered"]
        return not pending and bool(late)

    wait_for(settled, timeout=30)
    assert len(smtp.messages) == 2 and len(receiver.requests) == 2

    def stop() -> None:
        for fake in fakes:
            fake.stop()

    return config, stop, server.url


def forget(config: Path) -> None:
    result = CliRunner().invoke(cli, ["forget", CLIENT, "--yes", "--config", str(config)])
    assert result.exit_code == 0, result.output


def audit_output(config: Path, *, show: bool = True) -> str:
    """What the audit commands show of the client (with ``show``, content shown)."""
    runner, out = CliRunner(), []
    content = ["--show-content"] if show else []
    for args in (
        ["history", *content, "--format", "json"],
        ["stats", "--format", "json"],
    ):
        result = runner.invoke(cli, [*args, "--config", str(config)])
        assert result.exit_code == 0, result.output
        out.append(result.stdout)
    for event in json.loads(out[0])["events"]:
        result = runner.invoke(
            cli, ["why", event["event_id"], *content, "--format", "json", "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        out.append(result.stdout)
    return "\n".join(out)


@pytest.mark.slow
def test_forget_after_every_action_kind_leaves_no_marker_in_the_sqlite_files(
    tmp_path, serve, caplog
):
    config, stop, url = run_everything(tmp_path, serve, None)
    try:
        # the daemon's log and metrics quote none of the client's values (the log is
        # written before the erasure, which cannot reach it)
        logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
        assert found(logged) == set()
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.status_code == 200 and "rulekit_actions_total" in metrics.text
        assert found(metrics.text) == set()
        assert found(sqlite_bytes(tmp_path)) == set(TOKENS)  # the test can fail
        assert found(audit_output(config)) == set(TOKENS)
        # without --show-content only the client's name is shown
        assert found(audit_output(config, show=False)) == {"quarkmrkname"}
        forget(config)
        assert found(sqlite_bytes(tmp_path)) == set()
        assert found(audit_output(config)) == set()
    finally:
        stop()


@pytest.mark.slow
def test_forget_after_every_action_kind_leaves_no_marker_in_postgres(tmp_path, serve, postgres_url):
    config, stop, _ = run_everything(tmp_path, serve, postgres_url)
    try:
        assert found(postgres_dump(postgres_url)) == set(TOKENS)
        forget(config)
        assert found(postgres_dump(postgres_url)) == set()
        assert found(audit_output(config)) == set()
    finally:
        stop()
