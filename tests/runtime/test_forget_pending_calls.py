"""Jobs of a forgotten client's events that were still to run, or running, when ``rulekit
forget`` erased them: what they send afterwards and what their outcome records.

A job whose parameters do not quote the client (a webhook sending the event, an email to the
client) is not stopped by the erasure; a daemon held it, with its event, as they were before
(retrying it after a service's refusal, or waiting for its lane's turn), and sent the client's
name, email and message after the erasure. And the answer to a call under way during the
erasure (a receiver echoing what it got) was recorded after it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from daemons import wait_for, write_setup
from privacy_scenario import CLIENT, EMAIL, NAME, webhook
from test_forget_every_form import postgres_dump, sqlite_bytes

from rulekit.cli.main import cli
from rulekit.store.erasure import CALL_UNDER_WAY
from rulekit.testing.fakehttp import FakeService, RecordedRequest, Response

TEXT = "my card number is 4111 mrktext"
RULES = """\
- name: Tell the CRM
  on: {channel: online-chat, event: created}
  do:
    - webhook: {to: crm}
    - webhook: {to: crm, body: {event: "{{ event }}"}}
"""


def echo(request: RecordedRequest) -> Response:
    return Response(200, {"received": request.body.decode()})


def setup(tmp_path: Path, receiver: FakeService, backoff: float, storage: str | None) -> Path:
    extra = (
        "integrations:\n  webhooks:\n"
        f"    crm: {{url: '{receiver.base_url}/hooks', secret: whsec-forget-0123456789}}\n"
    )
    dispatcher = {"backoff_base": backoff, "backoff_max": backoff}
    config = write_setup(tmp_path, RULES, dispatcher=dispatcher, extra=extra)
    if storage is not None:
        config.write_text(config.read_text().replace("sqlite:///rulekit.sqlite3", storage))
    return config


def stored(tmp_path: Path, storage: str | None) -> str:
    return sqlite_bytes(tmp_path) if storage is None else postgres_dump(storage)


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def forget(config: Path) -> None:
    result = CliRunner().invoke(cli, ["forget", CLIENT, "--yes", "--config", str(config)])
    assert result.exit_code == 0, result.output


def jane(email: str = EMAIL) -> bytes:
    body = json.loads(webhook(CLIENT, NAME, "msgJane1", TEXT, info={"email": email}))
    return json.dumps(body).encode()


@pytest.mark.slow
def test_jobs_retried_or_waiting_their_turn_after_forget_send_nothing_it_erased(
    tmp_path, serve, storage
):
    with FakeService(echo) as receiver:
        receiver.script(Response(503, {"error": "busy"}))
        config = setup(tmp_path, receiver, 3.0, storage)
        server = serve(config)
        assert httpx.post(server.webhook_url, content=jane()).status_code == 200
        wait_for(lambda: len(receiver.requests) == 1)
        assert "mrktext" in receiver.requests[0].body.decode()  # the test can fail
        forget(config)
        # the first is sent again, the second (same target: same lane) after it
        wait_for(lambda: len(receiver.requests) == 3, timeout=20)
        for request in receiver.requests[1:]:
            sent = request.body.decode()
            assert "mrktext" not in sent and "4111" not in sent and "Brien" not in sent, sent
        assert "mrktext" not in stored(tmp_path, storage)


def test_the_outcome_of_a_call_under_way_during_forget_records_nothing_it_erased(
    tmp_path, serve, storage
):
    with FakeService(echo) as receiver:
        receiver.script(Response(200, {"received": "placeholder"}, delay=30))
        config = setup(tmp_path, receiver, 0.05, storage)
        server = serve(config)
        assert httpx.post(server.webhook_url, content=jane()).status_code == 200
        wait_for(lambda: len(receiver.requests) == 1)
        forget(config)
        receiver.release()

        def finished() -> bool:
            with server.daemon.store.transaction() as state:
                return not state.jobs(status="pending")

        wait_for(finished, timeout=20)
        assert "mrktext" not in stored(tmp_path, storage)
        with server.daemon.store.transaction() as state:
            (stopped,) = [job for job in state.jobs() if job.id == 1]
            assert stopped.status == "dead" and stopped.last_error == CALL_UNDER_WAY
            assert state.attempts(1) == []
